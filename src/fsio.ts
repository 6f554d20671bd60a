/**
 * File I/O shared across Kiln: positional reads and in-place patches (disk images, format headers),
 * atomic and durable replacement, and copies that keep holes and share no blocks with their source.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { copyFile, open, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

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
export function writeFileAtomic(path: string, data: string | Uint8Array, mode?: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, mode === undefined ? {} : { mode });
  renameSync(tmp, path);
}

/**
 * Like writeFileAtomic, and durable once it returns: the data is fsynced before the rename and the
 * directory after it, so a power loss leaves the old file or the new one, never an empty one. For
 * files a user keeps (kiln.lock, build.json) and records a release depends on.
 */
export function writeFileDurable(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDirSync(dirname(path));
}

/** Makes a rename, link or unlink in dir survive a power loss. */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

/** fsync of a file's data, or of a directory's entries. */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
}

export interface CopyOptions {
  /** Compute the sha256 of the content on the way (a clone is read back: what is hashed is what was stored). */
  hash?: boolean;
  onProgress?: (done: number, total: number) => void;
  /** Checked between chunks: an interrupt stops a multi-GiB copy at once (the partial copy is removed). */
  signal?: AbortSignal;
  /** Try a copy-on-write clone first (btrfs, XFS). Default true. */
  reflink?: boolean;
}

export interface CopyResult { how: 'reflink' | 'copy'; size: number; sha256?: string }

const CHUNK = 4 << 20;
const BLOCK = 4096;
const ZEROS = Buffer.alloc(CHUNK);
const FLUSH_EVERY = 256 << 20;

/**
 * Copies src to a new file dst (which must not exist) that shares no storage with it a write could
 * reach: a copy-on-write clone where the filesystem has them, else a copy that keeps holes (all-zero
 * 4 KiB blocks are skipped, not written, and the size is set at the end), so a 2 GiB raw disk
 * holding 500 MiB costs 500 MiB. The data is fsynced before this returns. Raw disks are sparse;
 * a hard link would let anyone who writes one name change the other.
 */
export async function copyFileSparse(src: string, dst: string, opts: CopyOptions = {}): Promise<CopyResult> {
  let cloned = false;
  if (opts.reflink !== false) {
    try {
      await copyFile(src, dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
      cloned = true;
    } catch (e) {
      // EEXIST is the caller's mistake; anything else means no clone here (ext4, tmpfs, another filesystem).
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw e;
      await rm(dst, { force: true });
    }
  }
  if (cloned) {
    try {
      const size = (await stat(dst)).size;
      const sha256 = opts.hash ? await hashWhole(dst, size, opts) : undefined;
      await fsyncPath(dst);
      return { how: 'reflink', size, sha256 };
    } catch (e) {
      await rm(dst, { force: true });
      throw e;
    }
  }
  const hash = opts.hash ? createHash('sha256') : undefined;
  const input = await open(src, 'r');
  let output: FileHandle | undefined;
  let reading: Promise<{ bytesRead: number }> | undefined;
  let writing: Promise<void> = Promise.resolve();
  let flushing: Promise<void> | undefined;
  try {
    const total = (await input.stat()).size;
    output = await open(dst, 'wx', 0o644);
    const out = output;
    // A pipeline over three buffers: the next chunk is read and the last one written (in libuv's
    // pool) while this one is hashed; the data is flushed as it goes, so the final fsync waits for
    // little. A buffer is read into again only once its write is done.
    const slots = [0, 1, 2].map(() => ({ buf: Buffer.allocUnsafe(CHUNK), written: Promise.resolve() }));
    let flushedAt = 0;
    let pos = 0;
    reading = input.read(slots[0].buf, 0, CHUNK, 0);
    for (let i = 0; ; i++) {
      const bytesRead: number = (await reading).bytesRead;
      reading = undefined;
      if (bytesRead === 0) break;
      opts.signal?.throwIfAborted();
      const slot = slots[i % 3];
      const next = slots[(i + 1) % 3];
      await next.written;
      reading = input.read(next.buf, 0, CHUNK, pos + bytesRead);
      hash?.update(slot.buf.subarray(0, bytesRead));
      const at = pos;
      writing = slot.written = writing.then(() => writeNonZero(out, slot.buf, bytesRead, at));
      writing.catch(() => undefined); // observed by the awaits below; never an unhandled rejection
      pos += bytesRead;
      if (!flushing && pos - flushedAt >= FLUSH_EVERY) {
        flushedAt = pos;
        flushing = writing.then(() => out.datasync()).finally(() => { flushing = undefined; });
        flushing.catch(() => undefined);
      }
      opts.onProgress?.(pos, total);
    }
    await writing;
    await flushing;
    // The last blocks may have been holes: the size comes from truncate, not from a write.
    await output.truncate(pos);
    await output.sync();
    return { how: 'copy', size: pos, sha256: hash?.digest('hex') };
  } catch (e) {
    await reading?.catch(() => undefined);
    await writing.catch(() => undefined);
    await flushing?.catch(() => undefined);
    await output?.close().catch(() => undefined);
    output = undefined;
    await rm(dst, { force: true });
    throw e;
  } finally {
    await input.close();
    await output?.close();
  }
}

/** Writes the runs of non-zero 4 KiB blocks of buf[0, n) at file offset pos. */
async function writeNonZero(fh: FileHandle, buf: Buffer, n: number, pos: number): Promise<void> {
  if (buf.subarray(0, n).equals(ZEROS.subarray(0, n))) return;
  let start = -1;
  for (let o = 0; o < n; o += BLOCK) {
    const end = Math.min(o + BLOCK, n);
    const zero = buf.subarray(o, end).equals(ZEROS.subarray(0, end - o));
    if (!zero && start < 0) start = o;
    if (zero && start >= 0) {
      await writeFully(fh, buf, start, o - start, pos + start);
      start = -1;
    }
  }
  if (start >= 0) await writeFully(fh, buf, start, n - start, pos + start);
}

async function writeFully(fh: FileHandle, buf: Buffer, offset: number, length: number, position: number): Promise<void> {
  while (length > 0) {
    const { bytesWritten } = await fh.write(buf, offset, length, position);
    offset += bytesWritten;
    position += bytesWritten;
    length -= bytesWritten;
  }
}

/** sha256 (hex) of a file, read in large chunks. */
export async function sha256OfFile(path: string, opts: CopyOptions = {}): Promise<string> {
  return hashWhole(path, (await stat(path)).size, opts);
}

async function hashWhole(path: string, total: number, opts: CopyOptions): Promise<string> {
  const hash = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    let pos = 0;
    for (;;) {
      opts.signal?.throwIfAborted();
      const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
      opts.onProgress?.(pos, total);
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}
