/**
 * Streaming blob I/O: hash while copying, so a multi-GiB artifact is read once, and a digest
 * mismatch names the blob. Used by the layout store and by the registry client.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { KilnError } from '../errors.js';

export type Progress = (bytesDone: number, total: number) => void;

export class DigestMismatchError extends KilnError {
  constructor(what: string, expected: string, actual: string, hint?: string) {
    super(`${what}: digest mismatch: expected ${expected}, got ${actual}`, {
      hint: hint ?? 'the store content was modified or corrupted; the release cannot be trusted. Re-pull or re-release it.',
    });
    this.name = 'DigestMismatchError';
  }
}

/** A pass-through stream that hashes and counts what flows through it. */
export function hashingStream(total: number, onProgress?: Progress): Transform & { digest(): string; bytes(): number } {
  const h = createHash('sha256');
  let n = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      n += chunk.length;
      onProgress?.(n, total);
      cb(null, chunk);
    },
  });
  return Object.assign(t, { digest: () => `sha256:${h.digest('hex')}`, bytes: () => n });
}

/**
 * A pass-through that holds a stream to its descriptor while it flows: it fails as soon as more
 * bytes arrive than the descriptor's size, so an endless body stops there, and at its end when
 * fewer arrived or the digest differs, so a pipeline through it rejects before its caller can use
 * what was written.
 */
export function verifyingStream(what: string, expected: { digest: string; size: number }, onProgress?: Progress): Transform {
  const h = createHash('sha256');
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > expected.size) { cb(new DigestMismatchError(what, `${expected.size} bytes`, `more than ${expected.size} bytes`)); return; }
      h.update(chunk);
      onProgress?.(n, expected.size);
      cb(null, chunk);
    },
    flush(cb) {
      if (n !== expected.size) { cb(new DigestMismatchError(what, `${expected.size} bytes`, `${n} bytes`)); return; }
      const actual = `sha256:${h.digest('hex')}`;
      cb(actual === expected.digest ? null : new DigestMismatchError(what, expected.digest, actual));
    },
  });
}

/** Copy a stream into a new file, fsync it, and return its digest and size. */
export async function writeStreamToFile(src: Readable, dest: string, total: number, onProgress?: Progress): Promise<{ digest: string; size: number }> {
  const hs = hashingStream(total, onProgress);
  const out = createWriteStream(dest, { flags: 'wx', mode: 0o644 });
  await pipeline(src, hs, out);
  const fh = await fsp.open(dest, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
  return { digest: hs.digest(), size: hs.bytes() };
}

export async function hashFile(path: string, onProgress?: Progress): Promise<{ digest: string; size: number }> {
  const st = await fsp.stat(path);
  const hs = hashingStream(st.size, onProgress);
  await pipeline(createReadStream(path), hs, async function* (source) { for await (const _ of source) { /* drain */ } });
  return { digest: hs.digest(), size: hs.bytes() };
}

export function verifyBytes(what: string, bytes: Buffer, expected: string, expectedSize?: number): void {
  const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  if (actual !== expected) throw new DigestMismatchError(what, expected, actual);
  if (expectedSize !== undefined && bytes.length !== expectedSize) throw new DigestMismatchError(what, `${expectedSize} bytes`, `${bytes.length} bytes`);
}

export function isErrno(e: unknown, code: string): boolean {
  return (e as NodeJS.ErrnoException)?.code === code;
}
