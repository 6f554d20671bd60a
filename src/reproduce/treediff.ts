/**
 * Where two builds differ: the root file trees of two raw disks, read losslessly through fuse2fs
 * (src/image/mount.ts: owners, modes with setuid bits, times, device numbers, hard links and
 * extended attributes such as security.capability, exactly as they ship), compared entry by entry.
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { rootOffset } from '../image/root-fs.js';
import { KilnError } from '../errors.js';
import { exec, output } from '../exec.js';
import { sha256OfFile } from '../fsio.js';
import { inspectDiskFile } from '../image/disk-file.js';
import { withMountedFilesystem } from '../image/mount.js';
import type { Logger } from '../log.js';

export interface TreeDifference {
  /** Path inside the image, e.g. /etc/shadow. */
  path: string;
  /** What differs: only-in-a, only-in-b, type, mode, owner, size, mtime, content, target. */
  what: string[];
}

function kind(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }): string {
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'special';
}

/**
 * Extended attributes of every entry below root that has any ({path: {name: hex}}). Node has no
 * xattr API; python3 (a host tool Kiln already needs) lists them without following links.
 */
export async function treeXattrs(root: string): Promise<Record<string, Record<string, string>>> {
  const script = `
import json, os, sys
root = sys.argv[1]
out = {}
def visit(rel):
    p = root + rel
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        names = []
    if names:
        vals = {}
        for n in sorted(names):
            try: vals[n] = os.getxattr(p, n, follow_symlinks=False).hex()
            except OSError as e: vals[n] = 'unreadable:' + str(e.errno)
        out[rel or '/'] = vals
    if os.path.isdir(p) and not os.path.islink(p):
        try: entries = sorted(os.listdir(p))
        except OSError: return
        for e in entries: visit(rel + '/' + e)
visit('')
json.dump(out, sys.stdout)
`;
  return JSON.parse(await output('python3', ['-c', script, root])) as Record<string, Record<string, string>>;
}

/** Every difference between trees a and b, sorted by path (directories before their contents). */
export async function diffTrees(a: string, b: string, opts: { limit?: number; /** What the two trees are called in the differences (default the release and the rebuild). */ sides?: [string, string]; /** List what is inside a directory only one side has (default: the directory alone). */ expand?: boolean } = {}): Promise<TreeDifference[]> {
  const limit = opts.limit ?? Infinity;
  const [sideA, sideB] = opts.sides ?? ['the release', 'the rebuild'];
  const out: TreeDifference[] = [];
  const [xa, xb] = await Promise.all([treeXattrs(a), treeXattrs(b)]);
  const list = (root: string, rel: string, side: string) => readdir(join(root, rel)).then(
    (names) => ({ names, error: undefined as string | undefined }),
    (e: NodeJS.ErrnoException) => ({ names: [] as string[], error: `unreadable in ${side} (${e.code ?? e.message})` }),
  );
  // Everything below a directory only one tree has (lstat: links are entries, never followed).
  const within = async (root: string, rel: string, side: string): Promise<void> => {
    if (!(await lstat(join(root, rel))).isDirectory()) return;
    const { names } = await list(root, rel, side);
    for (const n of names.sort()) {
      if (out.length >= limit) return;
      out.push({ path: `${rel}/${n}`, what: [`only in ${side}`] });
      await within(root, `${rel}/${n}`, side);
    }
  };
  const walk = async (rel: string): Promise<void> => {
    if (out.length >= limit) return;
    const [la, lb] = await Promise.all([list(a, rel, sideA), list(b, rel, sideB)]);
    // What cannot be read is a difference: it could hold anything.
    if (la.error || lb.error) { out.push({ path: rel || '/', what: [la.error, lb.error].filter((x): x is string => Boolean(x)) }); return; }
    const ea = la.names;
    const eb = lb.names;
    const names = [...new Set([...ea, ...eb])].sort();
    const sa = new Set(ea);
    const sb = new Set(eb);
    for (const n of names) {
      if (out.length >= limit) return;
      const p = `${rel}/${n}`;
      if (!sb.has(n)) { out.push({ path: p, what: [`only in ${sideA}`] }); if (opts.expand) await within(a, p, sideA); continue; }
      if (!sa.has(n)) { out.push({ path: p, what: [`only in ${sideB}`] }); if (opts.expand) await within(b, p, sideB); continue; }
      const [x, y] = await Promise.all([lstat(join(a, p), { bigint: true }), lstat(join(b, p), { bigint: true })]);
      const what: string[] = [];
      if (kind(x) !== kind(y)) what.push(`type ${kind(x)} -> ${kind(y)}`);
      else {
        if (x.mode !== y.mode) what.push(`mode ${(Number(x.mode) & 0o7777).toString(8)} -> ${(Number(y.mode) & 0o7777).toString(8)}`);
        if (x.uid !== y.uid || x.gid !== y.gid) what.push(`owner ${x.uid}:${x.gid} -> ${y.uid}:${y.gid}`);
        if (x.mtimeMs / 1000n !== y.mtimeMs / 1000n) what.push(`mtime ${x.mtimeMs / 1000n} -> ${y.mtimeMs / 1000n}`);
        if (!x.isDirectory() && x.nlink !== y.nlink) what.push(`links ${x.nlink} -> ${y.nlink}`);
        if (kind(x) === 'special' && x.rdev !== y.rdev) what.push(`device ${x.rdev} -> ${y.rdev}`);
        if (x.isSymbolicLink()) {
          const [ta, tb] = await Promise.all([readlink(join(a, p)), readlink(join(b, p))]);
          if (ta !== tb) what.push(`target ${ta} -> ${tb}`);
        } else if (x.isFile()) {
          if (x.size !== y.size) what.push(`size ${x.size} -> ${y.size}`);
          else {
            const [ha, hb] = await Promise.all([sha256OfFile(join(a, p)), sha256OfFile(join(b, p))]);
            if (ha !== hb) what.push('content');
          }
        }
        const [fa, fb] = [xa[p] ?? {}, xb[p] ?? {}];
        for (const k of [...new Set([...Object.keys(fa), ...Object.keys(fb)])].sort()) {
          if (fa[k] !== fb[k]) what.push(`xattr ${k} ${fa[k] === undefined ? 'added' : fb[k] === undefined ? 'removed' : 'changed'}`);
        }
      }
      if (what.length) out.push({ path: p, what });
      if (x.isDirectory() && y.isDirectory()) await walk(p);
    }
  };
  await walk('');
  return out;
}

/** The differences between the root trees of two raw disks, each read through its own fuse2fs view. */
export async function diffRootTrees(rawA: string, rawB: string, scratch: string, opts: { limit?: number; logger?: Logger } = {}): Promise<TreeDifference[]> {
  for (const f of [rawA, rawB]) {
    const facts = inspectDiskFile(f);
    if (facts.format !== 'raw') throw new KilnError(`${f}: expected a raw disk, found ${facts.detail}`, { where: { file: f } });
  }
  const [oa, ob] = [rootOffset(rawA), rootOffset(rawB)];
  return withMountedFilesystem(rawA, oa, scratch, (a) => withMountedFilesystem(rawB, ob, scratch, async (b) => {
    const d = await diffTrees(a.root, b.root, opts);
    a.check();
    return d;
  }, opts.logger), opts.logger);
}

/** The first byte offsets where two files differ (cmp -l), for a difference the file trees do not show. */
export async function firstDifferingBytes(a: string, b: string, max = 5): Promise<{ count: number; offsets: number[] }> {
  const r = await exec('sh', ['-c', 'setpriv --pdeathsig KILL -- cmp -l "$1" "$2" | setpriv --pdeathsig KILL -- awk -v max="$3" \'NR<=max{print $1-1} END{print "count",NR}\'', 'sh', a, b, String(max)], { allowFailure: true });
  const lines = r.stdout.trim().split('\n');
  const count = Number(/count (\d+)/.exec(r.stdout)?.[1] ?? 0);
  return { count, offsets: lines.filter((l) => /^\d+$/.test(l)).map(Number) };
}
