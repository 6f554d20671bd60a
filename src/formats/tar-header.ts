/**
 * Tar headers for the OVA, written byte for byte as GNU tar 1.34 writes them with
 * `--format=ustar|gnu --owner=root:0 --group=root:0 --mode=0644 --mtime=@SDE` (tested against it).
 * DSP0243 asks for USTAR; a USTAR size field holds at most 8 GiB - 1, so larger members use the
 * GNU format, whose size field switches to base-256 (as VMware's ova-compose does by default).
 */
import { KilnError } from '../errors.js';
export const BLOCK = 512;
/** GNU tar pads the archive to a whole record of 20 blocks. */
export const RECORD = 20 * BLOCK;
export const USTAR_MAX_SIZE = 8 ** 11 - 1;

export type TarFormat = 'ustar' | 'gnu';

export interface TarEntry {
  name: string;
  size: number;
  mtime: number;
  mode?: number;
}

export function chooseTarFormat(sizes: number[]): TarFormat {
  return sizes.every((s) => s <= USTAR_MAX_SIZE) ? 'ustar' : 'gnu';
}

function octal(buf: Buffer, value: number, offset: number, width: number): void {
  const digits = value.toString(8);
  if (digits.length > width - 1) throw new Error(`tar field overflow: ${value} in ${width} bytes`);
  buf.write(digits.padStart(width - 1, '0') + '\0', offset, 'latin1');
}

export function buildTarHeader(entry: TarEntry, format: TarFormat): Buffer {
  const name = Buffer.from(entry.name, 'utf8');
  if (name.length === 0 || name.length > 100 || entry.name.includes('/')) {
    throw new KilnError(`tar member name ${JSON.stringify(entry.name)}: expected a file name without '/' of 1 to 100 bytes`, { hint: 'artifact names are <name>-<version>.<format>: shorten the image name in kiln.yaml or the release tag' });
  }
  if (!Number.isSafeInteger(entry.size) || entry.size < 0) throw new Error(`bad tar member size ${entry.size}`);
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0);
  octal(h, entry.mode ?? 0o644, 100, 8);
  octal(h, 0, 108, 8);
  octal(h, 0, 116, 8);
  if (entry.size <= USTAR_MAX_SIZE) octal(h, entry.size, 124, 12);
  else if (format === 'gnu') {
    // GNU base-256: high bit of the first byte set, big-endian value in the remaining 11 bytes.
    h[124] = 0x80;
    h.writeBigUInt64BE(BigInt(entry.size), 128);
  } else throw new Error(`${entry.name} is ${entry.size} bytes: too large for ustar (use gnu)`);
  octal(h, Math.floor(entry.mtime), 136, 12);
  h.fill(0x20, 148, 156);
  h.write('0', 156, 'latin1');
  if (format === 'ustar') h.write('ustar\u000000', 257, 'latin1');
  else h.write('ustar  \0', 257, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  if (format === 'ustar') {
    octal(h, 0, 329, 8);
    octal(h, 0, 337, 8);
  }
  let sum = 0;
  for (const x of h) sum += x;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

/** Zero bytes after a member's data, up to the next block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** Bytes after the last member: two zero blocks, then zeros up to a whole record. */
export function trailerSize(bytesSoFar: number): number {
  const end = bytesSoFar + 2 * BLOCK;
  return 2 * BLOCK + ((RECORD - (end % RECORD)) % RECORD);
}
