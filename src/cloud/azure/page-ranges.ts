/**
 * A fixed VHD as Azure's page blob API takes it (pure code, no Azure calls): Put Page writes ranges
 * aligned to 512 bytes of at most 4 MiB each, and pages never written read back as zeros, so only the
 * non-zero data is sent. The file is read once, in 4 MiB chunks; in each, the runs of non-zero 64 KiB
 * grains are the ranges (Debian's own uploader skips all-zero 4 MiB chunks; finer grains send less of a
 * sparse ext4 disk). The whole file is hashed on the way, so the bytes uploaded are the bytes checked
 * against the release's digest.
 */
import { createHash } from 'node:crypto';
import { KilnError } from '../../errors.js';
import { fileChunks } from '../chunks.js';

export const PAGE = 512;
export const MAX_PUT = 4 * 1024 * 1024;
const GRAIN = 64 * 1024;
const ZERO = Buffer.alloc(GRAIN);

export interface PageRange { offset: number; data: Buffer }

/** A fixed VHD Azure accepts: its size is a whole number of MiB plus the 512-byte footer. */
export function checkAzureVhdSize(size: number): void {
  if (size <= PAGE || (size - PAGE) % (1024 * 1024) !== 0) {
    throw new KilnError(`the VHD is ${size} bytes: Azure needs a fixed VHD whose virtual size is a whole number of MiB (N MiB + 512-byte footer)`, { hint: 'Kiln\'s own VHDs are; set disk.size in MiB or GiB and release again' });
  }
}

export async function* pageRanges(file: string, stats: { bytes: number; sent: number; skipped: number; sha256?: string }): AsyncGenerator<PageRange> {
  const whole = createHash('sha256');
  for await (const { pos, chunk, size } of fileChunks(file, MAX_PUT, whole)) {
    if (size % PAGE) throw new KilnError(`${file} is ${size} bytes, not a whole number of 512-byte pages`);
    stats.bytes += chunk.length;
    let start = -1;
    const emit = (end: number): PageRange => {
      // A copy: the chunk is read into again while this range is uploaded.
      const data = Buffer.from(chunk.subarray(start, end));
      stats.sent += end - start;
      const r = { offset: pos + start, data };
      start = -1;
      return r;
    };
    for (let g = 0; g < chunk.length; g += GRAIN) {
      const end = Math.min(g + GRAIN, chunk.length);
      if (chunk.subarray(g, end).equals(ZERO.subarray(0, end - g))) {
        stats.skipped += end - g;
        if (start >= 0) yield emit(g);
      } else if (start < 0) start = g;
    }
    if (start >= 0) yield emit(chunk.length);
  }
  stats.sha256 = whole.digest('hex');
}

/**
 * The Azure Compute Gallery version name of a Kiln version: the last `x.y.z` in it (release-0.1.0 →
 * 0.1.0), each part a 32-bit integer, as the gallery requires. The exact version is kept in a tag.
 */
export function galleryVersionName(version: string): string {
  const all = [...version.matchAll(/(\d+)\.(\d+)\.(\d+)/g)];
  const m = all[all.length - 1];
  if (!m) throw new KilnError(`the version ${version} has no x.y.z in it: an Azure Compute Gallery version is named x.y.z`, { hint: 'tag releases like release-1.2.3 (version.tag_pattern in kiln.yaml)' });
  const parts = m.slice(1, 4).map(Number);
  if (parts.some((p) => p > 2 ** 31 - 1)) throw new KilnError(`the version ${version}: each part of an Azure gallery version must be a 32-bit integer`);
  return parts.join('.');
}
