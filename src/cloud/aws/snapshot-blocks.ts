/**
 * The EBS direct APIs' view of a disk (pure code, no AWS calls): a snapshot is a volume of whole GiB
 * cut into 512 KiB blocks; each block put carries the base64 SHA-256 of its bytes, and the snapshot is
 * completed with the number of blocks put and their *linear* aggregate: the SHA-256 of the blocks' raw
 * 32-byte digests concatenated in ascending block index order (EBS User Guide, "Use checksums").
 * All-zero blocks of an unencrypted snapshot need not be written: they read back as zeros.
 */
import { createHash } from 'node:crypto';
import { KilnError } from '../../errors.js';
import { fileChunks } from '../chunks.js';

export const EBS_BLOCK = 512 * 1024;
const GIB = 1024 ** 3;
const ZERO_BLOCK = Buffer.alloc(EBS_BLOCK);

/** The snapshot's VolumeSize: the disk rounded up to whole GiB (EBS volumes are sized in GiB). */
export function volumeSizeGiB(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`volumeSizeGiB: bad size ${bytes}`);
  return Math.ceil(bytes / GIB);
}

export function blockChecksum(data: Uint8Array): { raw: Buffer; base64: string } {
  const raw = createHash('sha256').update(data).digest();
  return { raw, base64: raw.toString('base64') };
}

/** CompleteSnapshot's checksum: base64 SHA-256 over the digests of the blocks put, in index order. */
export function linearAggregate(blocks: { index: number; sha256: Buffer }[]): string {
  const h = createHash('sha256');
  for (const b of [...blocks].sort((x, y) => x.index - y.index)) h.update(b.sha256);
  return h.digest('base64');
}

export interface DiskBlock { index: number; data: Buffer }

/**
 * Reads a disk file block by block and yields the blocks to upload (all of them when `skipZero` is
 * false). The whole file is hashed on the way: `done()` returns its sha256 once every block was read,
 * so the caller compares it with the release's digest before it completes the snapshot. The bytes
 * uploaded are then exactly the bytes that were verified; nothing is read twice.
 * A last partial block is padded with zeros (the volume is whole GiB).
 */
export async function* diskBlocks(file: string, opts: { skipZero: boolean; stats: { read: number; skipped: number; sha256?: string } }): AsyncGenerator<DiskBlock> {
  const whole = createHash('sha256');
  for await (const { pos, chunk } of fileChunks(file, EBS_BLOCK * 16, whole)) {
    for (let o = 0; o < chunk.length; o += EBS_BLOCK) {
      const n = Math.min(EBS_BLOCK, chunk.length - o);
      const slice = chunk.subarray(o, o + n);
      opts.stats.read++;
      if (opts.skipZero && slice.equals(ZERO_BLOCK.subarray(0, n))) {
        opts.stats.skipped++;
        continue;
      }
      // A copy, padded to a whole block: the chunk is read into again while this block is uploaded.
      const data = Buffer.alloc(EBS_BLOCK);
      slice.copy(data);
      yield { index: (pos + o) / EBS_BLOCK, data };
    }
  }
  opts.stats.sha256 = whole.digest('hex');
}

/** An AMI name: 3–128 characters of letters, digits, ( ) [ ] space . / - ' @ _ (EC2 RegisterImage). */
export function checkAmiName(name: string): string {
  if (!/^[A-Za-z0-9()[\] ./'@_-]{3,128}$/.test(name)) {
    throw new KilnError(`"${name}" is not a valid AMI name`, { hint: "EC2 takes 3-128 letters, digits, spaces and ( ) [ ] . / - ' @ _" });
  }
  return name;
}
