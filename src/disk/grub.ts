/** GRUB core images built with grub-mkimage (deterministic, unlike grub-mkstandalone). */
import { access, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';
import { GRUB_MODULES, earlyConfig } from './bootconfig.js';

export type GrubTarget = keyof typeof GRUB_MODULES;

const GRUB_PACKAGE: Record<GrubTarget, string> = { 'i386-pc': 'grub-pc-bin', 'x86_64-efi': 'grub-efi-amd64-bin' };
export const GRUB_LIB = '/usr/lib/grub';

export function grubMkimageArgs(target: GrubTarget, output: string, earlyCfg: string): string[] {
  return ['-O', target, '-d', join(GRUB_LIB, target), '-o', output, '-c', earlyCfg, '-p', '/boot/grub', ...GRUB_MODULES[target]];
}

export async function grubModuleDir(target: GrubTarget): Promise<string> {
  const dir = join(GRUB_LIB, target);
  try {
    await access(join(dir, 'moddep.lst'));
  } catch {
    throw new KilnError(`GRUB modules for ${target} are not installed (${dir})`, {
      hint: `install the Debian package ${GRUB_PACKAGE[target]} (run \`kiln doctor\` as root)`,
    });
  }
  return dir;
}

/** Builds the image for `target` into `output`, with the early config that finds the root by UUID. */
export async function buildGrubImage(target: GrubTarget, output: string, rootFsUuid: string, workDir: string, logger: Logger = silentLogger): Promise<void> {
  await grubModuleDir(target);
  const cfg = join(workDir, 'grub-early.cfg');
  await writeFile(cfg, earlyConfig(rootFsUuid));
  await exec('grub-mkimage', grubMkimageArgs(target, output, cfg), { logger, env: { LC_ALL: 'C' } });
}
