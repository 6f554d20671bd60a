/**
 * The raw artifact: the build's raw disk itself, reflinked, else hard-linked, else sparse-copied.
 * A hard link shares the inode with <work>/disk.raw only inside the build's work area, which is
 * removed when the build ends; the release store and an out directory on another filesystem get
 * copies of their own (src/store/layout.ts, src/build/outputs.ts), so the link reaches nothing a
 * later write could change.
 */
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
