/**
 * A release artifact read once, in fixed-size chunks, for an upload (the EBS blocks of an AMI, the
 * pages of an Azure page blob): each chunk is hashed into the whole file's digest as it is read, so
 * the bytes uploaded are the bytes checked against the release. The buffer is reused: a consumer
 * copies what it keeps past the next chunk.
 */
import type { Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { KilnError } from '../errors.js';

export async function* fileChunks(file: string, chunkSize: number, whole: Hash): AsyncGenerator<{ pos: number; chunk: Buffer; size: number }> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const buf = Buffer.allocUnsafe(chunkSize);
    for (let pos = 0; pos < size;) {
      const want = Math.min(chunkSize, size - pos);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, pos + got);
        if (bytesRead === 0) throw new KilnError(`${file} shrank while it was read (${pos + got} of ${size} bytes)`, { hint: 'nothing may write the release store while a release is published' });
        got += bytesRead;
      }
      const chunk = buf.subarray(0, got);
      whole.update(chunk);
      yield { pos, chunk, size };
      pos += got;
    }
  } finally {
    await fh.close();
  }
}
