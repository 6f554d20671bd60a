/**
 * File operations on an image's root tree, addressed by the path the image sees ("/etc/ssh").
 * A tree holds absolute symlinks (/var/lib/dbus/machine-id -> /etc/machine-id) that must resolve
 * inside the tree, never on the build host, so parent components are resolved like a chroot
 * would and the last component is never followed. Every change honours seal.keep.
 */
import { lstatSync, lutimesSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, truncateSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { hostPath, pathParts, statInTree } from '../image/tree.js';
import type { SealContext, TreeEntry } from './types.js';

/** Top-level directories the seal does not walk: packaged code, kernel trees, API filesystems. */
export const SCAN_SKIP = new Set(['proc', 'sys', 'dev', 'boot', 'usr', 'lib', 'lib32', 'lib64', 'libx32', 'bin', 'sbin', 'lost+found']);
/** Walked even though their top-level directory is skipped. */
export const SCAN_ALSO = ['/usr/local'];
/** Top-level directories no walk enters: API filesystems, whose contents are the running host's, not the image's. */
export const PSEUDO_FS = new Set(['proc', 'sys', 'dev', 'run']);

/** True when the seal's walk (SCAN_SKIP, SCAN_ALSO) covers the path. */
export function inSealScope(p: string): boolean {
  const top = p.split('/')[1] ?? '';
  return !SCAN_SKIP.has(top) || SCAN_ALSO.some((d) => under(p, d));
}

function lstatOrUndefined(p: string): Stats | undefined {
  try { return lstatSync(p); } catch { return undefined; }
}

export function isFile(root: string, p: string): boolean {
  return statInTree(root, p)?.isFile() ?? false;
}

export function isDir(root: string, p: string): boolean {
  return statInTree(root, p)?.isDirectory() ?? false;
}

/** Names in an image directory, sorted; [] when it is not a directory. */
export function list(root: string, dir: string): string[] {
  if (!isDir(root, dir)) return [];
  return readdirSync(hostPath(root, dir)).sort();
}

export function readText(root: string, p: string, max = 8 * 1024 * 1024): string {
  const buf = readFileSync(hostPath(root, p));
  return buf.subarray(0, max).toString('latin1');
}

export function child(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** Existing image paths matching a pattern whose components may hold `*` and `?` (no `**`). */
export function glob(root: string, pattern: string): string[] {
  let found = ['/'];
  for (const c of pathParts(pattern)) {
    if (!/[*?]/.test(c)) {
      found = found.map((d) => child(d, c));
      continue;
    }
    const re = new RegExp(`^${c.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    found = found.flatMap((d) => list(root, d).filter((n) => re.test(n) && (c.startsWith('.') || !n.startsWith('.'))).map((n) => child(d, n)));
  }
  return found.filter((p) => statInTree(root, p) !== undefined);
}

/** Home directories sealing cares about: root's and every /home/* directory. */
export function homes(root: string): string[] {
  return ['/root', ...glob(root, '/home/*').filter((h) => isDir(root, h))].filter((h) => isDir(root, h));
}

/** Removes an image path (recursively) unless kept; a directory holding kept paths loses only the rest. */
export function remove(root: string, p: string, ctx: SealContext): string[] {
  const st = statInTree(root, p);
  if (!st || ctx.keep.has(p)) return [];
  if (st.isDirectory() && ctx.keep.below(p)) return removeContents(root, p, ctx);
  rmSync(hostPath(root, p), { recursive: true, force: true });
  return [p];
}

/** Removes everything inside a directory, keeping the directory itself (services expect it). */
export function removeContents(root: string, dir: string, ctx: SealContext): string[] {
  return list(root, dir).flatMap((n) => remove(root, child(dir, n), ctx));
}

/** Empties a regular file in place (owner and mode survive). */
export function truncate(root: string, p: string, ctx: SealContext): string[] {
  const st = statInTree(root, p);
  if (!st?.isFile() || st.size === 0 || ctx.keep.has(p)) return [];
  truncateSync(hostPath(root, p), 0);
  return [p];
}

/** Rewrites a text file without the lines drop accepts; returns [p] when something was dropped. */
export function dropLines(root: string, p: string, ctx: SealContext, drop: (line: string) => boolean): string[] {
  if (!isFile(root, p) || ctx.keep.has(p)) return [];
  const text = readFileSync(hostPath(root, p), 'utf8');
  const lines = text.split('\n');
  const kept = lines.filter((l) => !drop(l));
  if (kept.length === lines.length) return [];
  writeFileSync(hostPath(root, p), kept.join('\n'));
  return [p];
}

/** Creates or replaces a file the seal owns (first-boot units), dated SOURCE_DATE_EPOCH when given. */
export function writeOwned(root: string, p: string, text: string, ctx: SealContext, mode = 0o644): string[] {
  if (ctx.keep.has(p)) return [];
  const host = hostPath(root, p);
  const st = lstatOrUndefined(host);
  if (st?.isFile() && (st.mode & 0o7777) === mode && readFileSync(host, 'utf8') === text) return [];
  mkdirSync(hostPath(root, p.slice(0, p.lastIndexOf('/')) || '/'), { recursive: true });
  rmSync(host, { force: true, recursive: true });
  writeFileSync(host, text, { mode });
  stamp(host, ctx);
  return [p];
}

export function symlinkOwned(root: string, p: string, target: string, ctx: SealContext): string[] {
  if (ctx.keep.has(p)) return [];
  const host = hostPath(root, p);
  mkdirSync(hostPath(root, p.slice(0, p.lastIndexOf('/')) || '/'), { recursive: true });
  const st = lstatOrUndefined(host);
  if (st?.isSymbolicLink() && readlinkSync(host) === target) return [];
  rmSync(host, { force: true, recursive: true });
  symlinkSync(target, host);
  stamp(host, ctx);
  return [p];
}

function stamp(host: string, ctx: SealContext): void {
  if (ctx.sourceDateEpoch !== undefined) lutimesSync(host, ctx.sourceDateEpoch, ctx.sourceDateEpoch);
}

const why = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;

/**
 * Every entry of the tree but the top-level directories in skip (then those in also), depth first,
 * symlinks not followed. A directory or entry that cannot be read is an entry of kind
 * 'unreadable', never skipped: the audit fails closed.
 */
export function walk(root: string, skip: ReadonlySet<string> = SCAN_SKIP, also: readonly string[] = SCAN_ALSO): TreeEntry[] {
  const out: TreeEntry[] = [];
  const visit = (dir: string) => {
    let names: string[];
    // dir was reached through lstat as a real directory (links are never followed), in a tree nothing
    // else writes while it is walked: joined, not resolved component by component (on an image read
    // through FUSE every lookup is a round trip).
    try { names = readdirSync(dir === '/' ? root : join(root, dir)).sort(); } catch (e) {
      out.push({ path: dir, kind: 'unreadable', size: 0, error: `cannot list the directory (${why(e)})` });
      return;
    }
    for (const n of names) {
      const p = child(dir, n);
      if (dir === '/' && skip.has(n)) continue;
      let st: Stats;
      try { st = lstatSync(join(root, p)); } catch (e) {
        out.push({ path: p, kind: 'unreadable', size: 0, error: `cannot read the entry (${why(e)})` });
        continue;
      }
      const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      out.push({ path: p, kind, size: st.size, ino: st.ino });
      if (kind === 'dir') visit(p);
    }
  };
  visit('/');
  for (const extra of also) {
    const st = statInTree(root, extra);
    if (st?.isDirectory()) { out.push({ path: extra, kind: 'dir', size: st.size }); visit(extra); }
  }
  return out;
}

/** True when the entry is at or below dir. */
export function under(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}
