/**
 * Every host-side access to an image's root tree goes through here. The tree is the playbook's
 * work (and, for other sources, someone else's image): its symlinks are hostile input. Kiln runs
 * as root on the host, so `join(root, 'etc/release')` would follow `/etc -> /host-etc` or
 * `/etc/release -> /etc/shadow` out of the tree and overwrite the build host's files.
 *
 * Paths are the ones the image sees ("/etc/release"). Parent components resolve like a chroot
 * would: links are followed inside the tree (`/bin -> usr/bin`, an absolute `/etc/alt -> /opt/x`
 * means <root>/opt/x), `..` stops at the tree's root. The last component is never followed
 * unless asked (`resolved`), and then it too resolves inside the tree.
 */
import { closeSync, constants, lstatSync, mkdirSync, openSync, readlinkSync, readSync, rmSync, symlinkSync, writeSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';

const MAX_LINKS = 40;

/** The components of an image path, without empty and `.` ones. */
export function pathParts(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

function lstatOrUndefined(p: string): Stats | undefined {
  try { return lstatSync(p); } catch { return undefined; }
}

function resolve(root: string, imagePath: string, followLast: boolean): string {
  const all = pathParts(imagePath);
  const last = followLast ? undefined : all.pop();
  const queue = [...all];
  let cur: string[] = [];
  let hops = 0;
  while (queue.length) {
    const c = queue.shift() as string;
    if (c === '..') { cur.pop(); continue; }
    const st = lstatOrUndefined(join(root, ...cur, c));
    if (st?.isSymbolicLink()) {
      if (++hops > MAX_LINKS) throw new KilnError(`too many symlinks resolving ${imagePath} in the image tree ${root}`);
      const target = readlinkSync(join(root, ...cur, c));
      if (target.startsWith('/')) cur = [];
      queue.unshift(...pathParts(target));
      continue;
    }
    cur.push(c);
  }
  if (last === undefined) return join(root, ...cur);
  if (last === '..') return join(root, ...cur.slice(0, -1));
  return join(root, ...cur, last);
}

/** Host path of an image path: parent symlinks resolve inside root; the last component is not followed. */
export function hostPath(root: string, imagePath: string): string {
  return resolve(root, imagePath, false);
}

/** Host path of an image path with every link, the last one too, resolved inside root (for reading through /etc/os-release -> ../usr/lib/os-release). */
export function resolvedPath(root: string, imagePath: string): string {
  return resolve(root, imagePath, true);
}

/** lstat of an image path (undefined when missing). */
export function statInTree(root: string, imagePath: string): Stats | undefined {
  return lstatOrUndefined(hostPath(root, imagePath));
}

/** True when the image path exists, following links inside the tree (e.g. /bin/sh -> dash). */
export function existsInTree(root: string, imagePath: string): boolean {
  return lstatOrUndefined(resolvedPath(root, imagePath)) !== undefined;
}

/**
 * A regular file's bytes (at most `max`, default 16 MiB), or undefined when there is none. `follow`
 * reads through links inside the tree; otherwise a link is not a file. The final open refuses links
 * either way (O_NOFOLLOW).
 */
export function readTreeBytes(root: string, imagePath: string, opts: { follow?: boolean; max?: number } = {}): Buffer | undefined {
  const host = opts.follow ? resolvedPath(root, imagePath) : hostPath(root, imagePath);
  if (!lstatOrUndefined(host)?.isFile()) return undefined;
  const fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const max = opts.max ?? 16 * 1024 * 1024;
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const b = Buffer.alloc(Math.min(1 << 16, max - total));
      if (!b.length) break;
      const n = readSync(fd, b, 0, b.length, null);
      if (!n) break;
      chunks.push(b.subarray(0, n));
      total += n;
    }
    return Buffer.concat(chunks);
  } finally {
    closeSync(fd);
  }
}

/** A regular file's text (readTreeBytes as UTF-8), or undefined when there is none. */
export function readTreeFile(root: string, imagePath: string, opts: { follow?: boolean; max?: number } = {}): string | undefined {
  return readTreeBytes(root, imagePath, opts)?.toString('utf8');
}

/** Creates the directory and its missing parents inside the tree (each a real directory); returns its host path. */
export function mkdirInTree(root: string, imagePath: string, mode = 0o755): string {
  const host = resolvedPath(root, imagePath);
  mkdirSync(host, { recursive: true, mode });
  if (!lstatOrUndefined(host)?.isDirectory()) throw new KilnError(`the image tree's ${imagePath} is not a directory`);
  return host;
}

/** The host path of an entry Kiln replaces or removes: never the tree itself (`/`, `/etc/..`). */
function entryPath(root: string, imagePath: string): string {
  const host = hostPath(root, imagePath);
  if (host === join(root) || !host.startsWith(`${join(root)}/`)) throw new KilnError(`${imagePath} names the image tree itself, not an entry in it`);
  return host;
}

function parentOf(imagePath: string): string {
  const ps = pathParts(imagePath);
  return `/${ps.slice(0, -1).join('/')}`;
}

/**
 * Writes a regular file at the image path, replacing whatever entry is there (a link, a file
 * hard-linked elsewhere, a directory) with a new inode; never writes through a link.
 */
export function writeTreeFile(root: string, imagePath: string, content: string | Uint8Array, mode = 0o644): string {
  mkdirInTree(root, parentOf(imagePath));
  const host = entryPath(root, imagePath);
  rmSync(host, { force: true, recursive: true });
  const fd = openSync(host, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    const data = typeof content === 'string' ? Buffer.from(content) : content;
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
  } finally {
    closeSync(fd);
  }
  return host;
}

/** Replaces the image path with a symlink to target (the link itself is written, nothing is followed). */
export function symlinkInTree(root: string, imagePath: string, target: string): string {
  mkdirInTree(root, parentOf(imagePath));
  const host = entryPath(root, imagePath);
  rmSync(host, { force: true, recursive: true });
  symlinkSync(target, host);
  return host;
}

/** Removes the image path (recursively for a directory); a link is removed, not followed. */
export function removeInTree(root: string, imagePath: string): void {
  rmSync(entryPath(root, imagePath), { force: true, recursive: true });
}
