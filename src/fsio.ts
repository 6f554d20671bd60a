/** Positional reads and in-place patches of files (disk images, format headers). */
import { renameSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';

export async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Writes each patch at its byte offset, in place. */
export async function writeAt(path: string, patches: { offset: number; data: Uint8Array }[]): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    for (const p of patches) await fh.write(p.data, 0, p.data.length, p.offset);
  } finally {
    await fh.close();
  }
}

/**
 * Writes a file so that readers see the old content or the new, never a part: concurrent builds
 * share the cache, and each writes its own temporary file before the atomic rename.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}
