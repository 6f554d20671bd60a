/**
 * The bytes of many files of an ext4 filesystem inside a disk image, read in one pass by debugfs
 * (e2fsprogs) instead of one open and read per file through FUSE: fuse2fs serves one request at a
 * time, and on the example image reading every file through it costs about 6 s where this costs
 * about 1 s.
 *
 * Files are named by inode number (from the walk of the FUSE view of the same read-only file), so
 * no name from the image is ever parsed. debugfs opens the image read-only and writes only to its
 * stdout: one `cat <ino>` per file, each echoed as `debugfs: cat <ino>` before the file's bytes.
 * The reader knows each file's size and checks every echo where it must be; any other output,
 * anything on stderr but the banner, or an exit status other than 0 rejects the whole read, and
 * the caller reads through FUSE instead. A sink's results are the caller's to keep only once
 * `readInodes` resolves.
 */
import { spawn } from 'node:child_process';
import { KilnError } from '../errors.js';
import { hostEnv } from '../sandbox/env.js';

export interface InodeFile { ino: number; size: number }
export interface FileSink { data(chunk: Buffer): void; end(): void }

/** The read could not be vouched for: discard what the sinks saw. */
export class InodeStreamError extends KilnError {}

const BANNER = /^debugfs \d+(?:\.\d+)* \([^)]*\)$/;

/**
 * Streams each file's bytes, in order, to sink(i). Resolves when debugfs has exited cleanly after
 * exactly the expected output; rejects with InodeStreamError otherwise.
 */
export function readInodes(image: string, offset: number, files: readonly InodeFile[], sink: (i: number) => FileSink): Promise<void> {
  return new Promise((resolve, reject) => {
    // Spawned here, not through exec (which keeps output as text): the same parent-death signal, so
    // if Kiln dies, debugfs does too.
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'debugfs', '-f', '-', `${image}?offset=${offset}`], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: hostEnv({ LC_ALL: 'C', PAGER: '__none__', DEBUGFS_PAGER: '__none__' }),
    });
    let failed: string | undefined;
    const fail = (why: string) => {
      if (failed) return;
      failed = why;
      child.kill('SIGKILL');
    };
    let i = 0;
    let header = files.length ? Buffer.from(`debugfs: cat <${files[0].ino}>\n`) : Buffer.alloc(0);
    let matched = 0;
    let remaining = -1; // -1: in a header; else bytes of file i still to come
    let current: FileSink | undefined;
    const next = () => {
      current?.end();
      current = undefined;
      i++;
      remaining = -1;
      matched = 0;
      if (i < files.length) header = Buffer.from(`debugfs: cat <${files[i].ino}>\n`);
    };
    child.stdout.on('data', (chunk: Buffer) => {
      let off = 0;
      try {
        while (off < chunk.length && !failed) {
          if (i >= files.length) return fail('output after the last file');
          if (remaining < 0) {
            const n = Math.min(header.length - matched, chunk.length - off);
            if (!chunk.subarray(off, off + n).equals(header.subarray(matched, matched + n))) return fail(`unexpected output where inode ${files[i].ino} should begin`);
            off += n;
            matched += n;
            if (matched < header.length) continue;
            remaining = files[i].size;
            current = sink(i);
            if (remaining === 0) next();
            continue;
          }
          const n = Math.min(remaining, chunk.length - off);
          current?.data(chunk.subarray(off, off + n));
          off += n;
          remaining -= n;
          if (remaining === 0) next();
        }
      } catch (e) {
        fail((e as Error).message);
        reject(e);
      }
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => { if (stderr.length < 64 * 1024) stderr += c.toString('latin1'); });
    child.on('error', (e) => fail(`cannot run debugfs: ${e.message}`));
    child.on('close', (code, signal) => {
      const noise = stderr.split('\n').filter((l) => l.trim() && !BANNER.test(l.trim()));
      const why = failed ?? (code !== 0 ? `debugfs exited with ${code ?? signal}` : noise.length ? noise.slice(0, 3).join('; ') : i < files.length ? `output ended before inode ${files[i].ino}` : undefined);
      if (why) reject(new InodeStreamError(`cannot read the files of ${image} with debugfs: ${why}`));
      else resolve();
    });
    child.stdin.on('error', () => { /* debugfs gone: reported by close */ });
    child.stdin.end(files.map((f) => `cat <${f.ino}>\n`).join(''));
  });
}
