/** Positional reads and in-place patches of files (disk images, format headers). */
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
