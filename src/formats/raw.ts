/** The raw artifact: the build's raw disk itself, reflinked, else hard-linked, else sparse-copied. */
import { constants } from 'node:fs';
import { copyFile, link } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { copySparse } from './io.js';

export async function placeRaw(raw: string, dst: string, logger?: Logger): Promise<'reflink' | 'hardlink' | 'copy'> {
  try {
    await copyFile(raw, dst, constants.COPYFILE_FICLONE_FORCE);
    return 'reflink';
  } catch { /* filesystem without reflinks */ }
  try {
    await link(raw, dst);
    return 'hardlink';
  } catch { /* another filesystem */ }
  await copySparse(raw, dst, logger);
  return 'copy';
}
