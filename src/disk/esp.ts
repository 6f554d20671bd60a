/**
 * The EFI system partition: FAT32 made with mkfs.vfat --invariant and a fixed serial, filled with
 * mtools (no mount). mtools stamps new entries with SOURCE_DATE_EPOCH and copies source mtimes
 * (-m), and FAT stores local time, so TZ is pinned to UTC too.
 */
import { utimes } from 'node:fs/promises';
import { exec } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';

export interface EspFile {
  /** Host file to copy. */
  source: string;
  /** Path on the ESP, with forward slashes: "EFI/BOOT/BOOTX64.EFI". */
  target: string;
}

/** The directories to create, parents first, in C-locale sorted order. */
export function espDirectories(files: EspFile[]): string[] {
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.target.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].sort(byteOrder);
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export async function buildEsp(image: string, sizeBytes: number, serial: string, files: EspFile[], sde: number, logger: Logger = silentLogger, label = 'ESP'): Promise<void> {
  const env = { SOURCE_DATE_EPOCH: String(sde), TZ: 'UTC', LC_ALL: 'C', MTOOLS_SKIP_CHECK: '1' };
  await exec('mkfs.vfat', ['-C', '--invariant', '-i', serial, '-F', '32', '-n', label, image, String(sizeBytes / 1024)], { env, logger });
  const dirs = espDirectories(files);
  if (dirs.length > 0) await exec('mmd', ['-i', image, ...dirs.map((d) => `::/${d}`)], { env, logger });
  for (const f of [...files].sort((a, b) => byteOrder(a.target, b.target))) {
    await utimes(f.source, sde, sde);
    await exec('mcopy', ['-m', '-i', image, f.source, `::/${f.target}`], { env, logger });
  }
}
