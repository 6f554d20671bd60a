/** Writing a partition image into the disk file like `dd conv=notrunc,sparse`: zero runs stay holes. */
import { open } from 'node:fs/promises';

const CHUNK = 4 * 1024 * 1024;
const GRAIN = 64 * 1024;
const ZERO = Buffer.alloc(GRAIN);

/**
 * Copies `source` into `dest` at byte `offset` without truncating `dest`, skipping every 64 KiB
 * grain that is all zeros. `dest` must be zero in the target range (a fresh sparse file is).
 * Returns the bytes actually written.
 */
export async function copyIntoSparse(source: string, dest: string, offset: number): Promise<number> {
  const src = await open(source, 'r');
  const dst = await open(dest, 'r+');
  let written = 0;
  try {
    const buf = Buffer.alloc(CHUNK);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await src.read(buf, 0, CHUNK, pos);
      if (bytesRead === 0) break;
      let runStart = -1;
      const flush = async (stop: number) => {
        await dst.write(buf, runStart, stop - runStart, offset + pos + runStart);
        written += stop - runStart;
        runStart = -1;
      };
      for (let g = 0; g < bytesRead; g += GRAIN) {
        const end = Math.min(g + GRAIN, bytesRead);
        const zero = buf.subarray(g, end).equals(ZERO.subarray(0, end - g));
        if (!zero && runStart < 0) runStart = g;
        if (zero && runStart >= 0) await flush(g);
      }
      if (runStart >= 0) await flush(bytesRead);
      pos += bytesRead;
    }
  } finally {
    await src.close();
    await dst.close();
  }
  return written;
}

export { readAt, writeAt } from '../fsio.js';
