/**
 * Where two builds differ: the root file trees of two raw disks, extracted without mounting
 * (debugfs rdump keeps owner, mode and times), compared entry by entry.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { dumpExt4 } from '../disk/ext4.js';
import { findRootPartition } from '../disk/index.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';

export interface TreeDifference {
  /** Path inside the image, e.g. /etc/shadow. */
  path: string;
  /** What differs: only-in-a, only-in-b, type, mode, owner, size, mtime, content, target. */
  what: string[];
}

async function sha(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

function kind(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }): string {
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'special';
}

/** Every difference between trees a and b, sorted by path (directories before their contents). */
export async function diffTrees(a: string, b: string, opts: { limit?: number } = {}): Promise<TreeDifference[]> {
  const limit = opts.limit ?? Infinity;
  const out: TreeDifference[] = [];
  const walk = async (rel: string): Promise<void> => {
    if (out.length >= limit) return;
    const [ea, eb] = await Promise.all([readdir(join(a, rel)).catch(() => [] as string[]), readdir(join(b, rel)).catch(() => [] as string[])]);
    const names = [...new Set([...ea, ...eb])].sort();
    const sa = new Set(ea);
    const sb = new Set(eb);
    for (const n of names) {
      if (out.length >= limit) return;
      const p = `${rel}/${n}`;
      if (!sb.has(n)) { out.push({ path: p, what: ['only in the release'] }); continue; }
      if (!sa.has(n)) { out.push({ path: p, what: ['only in the rebuild'] }); continue; }
      const [x, y] = await Promise.all([lstat(join(a, p), { bigint: true }), lstat(join(b, p), { bigint: true })]);
      const what: string[] = [];
      if (kind(x) !== kind(y)) what.push(`type ${kind(x)} -> ${kind(y)}`);
      else {
        if (x.mode !== y.mode) what.push(`mode ${(Number(x.mode) & 0o7777).toString(8)} -> ${(Number(y.mode) & 0o7777).toString(8)}`);
        if (x.uid !== y.uid || x.gid !== y.gid) what.push(`owner ${x.uid}:${x.gid} -> ${y.uid}:${y.gid}`);
        // debugfs rdump cannot date symlinks or keep directory times (it writes into them): files only.
        if (x.isFile() && x.mtimeMs / 1000n !== y.mtimeMs / 1000n) what.push(`mtime ${x.mtimeMs / 1000n} -> ${y.mtimeMs / 1000n}`);
        if (x.isSymbolicLink()) {
          const [ta, tb] = await Promise.all([readlink(join(a, p)), readlink(join(b, p))]);
          if (ta !== tb) what.push(`target ${ta} -> ${tb}`);
        } else if (x.isFile()) {
          if (x.size !== y.size) what.push(`size ${x.size} -> ${y.size}`);
          else if ((await sha(join(a, p))) !== (await sha(join(b, p)))) what.push('content');
        }
      }
      if (what.length) out.push({ path: p, what });
      if (x.isDirectory() && y.isDirectory()) await walk(p);
    }
  };
  await walk('');
  return out;
}

/** Extracts the root filesystem of a raw disk into dir (debugfs rdump: no mount, owners and modes kept). */
export async function extractRootTree(raw: string, dir: string, logger?: Logger): Promise<void> {
  const { offset } = await findRootPartition(raw);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await dumpExt4(raw, offset, dir, logger);
}

/** The first byte offsets where two files differ (cmp -l), for a difference the file trees do not show. */
export async function firstDifferingBytes(a: string, b: string, max = 5): Promise<{ count: number; offsets: number[] }> {
  const r = await exec('sh', ['-c', 'cmp -l "$1" "$2" | awk -v max="$3" \'NR<=max{print $1-1} END{print "count",NR}\'', 'sh', a, b, String(max)], { allowFailure: true });
  const lines = r.stdout.trim().split('\n');
  const count = Number(/count (\d+)/.exec(r.stdout)?.[1] ?? 0);
  return { count, offsets: lines.filter((l) => /^\d+$/.test(l)).map(Number) };
}
