/**
 * What a sandbox is made of: one line per mount, in order, carried out by phase A (scripts.ts).
 * Pure, so the layouts are unit-tested; the one host-side check (mount points inside an image tree
 * must not be symlinks) is `prepareMountPoints`.
 */
import { lstatSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { KilnError } from '../errors.js';

export type SpecLine =
  | { kind: 'root'; src: string }
  | { kind: 'bind'; mode: 'ro' | 'rw'; src: string; dst: string }
  | { kind: 'tmpfs'; mode: string; dst: string }
  | { kind: 'dev'; dst: string }
  | { kind: 'copy'; src: string; dst: string }
  | { kind: 'file'; mode: string; src: string; dst: string }
  | { kind: 'mkdir'; mode: string; dst: string };

/** Where the image tree is inside the sandbox, and the chroot connection's target. */
export const IMAGE = '/image';
/** Kiln's sandbox-only directory in the image, as the image sees it (on a tmpfs: nothing of it reaches the image). */
export const KILN_RUN = '/run/kiln';
/** The same directory as the controller sees it. */
export const IMAGE_KILN = `${IMAGE}${KILN_RUN}`;

function checkPath(p: string, what: string, absolute: boolean): void {
  if (/[\t\n\r\0]/.test(p)) throw new KilnError(`the build sandbox cannot use a path with a tab, newline or NUL: ${JSON.stringify(p)}`, { hint: `rename ${what}` });
  if (absolute && (!p.startsWith('/') || posix.normalize(p) !== p || p.split('/').includes('..'))) throw new KilnError(`the build sandbox needs an absolute and normal path (no '.', '..', '//' or trailing '/'), got ${JSON.stringify(p)}`, { hint: `give ${what} as a plain absolute path (e.g. KILN_CACHE_DIR, --out)` });
}

/** The spec file phase A reads: tab-separated, one mount per line. */
export function specText(lines: readonly SpecLine[]): string {
  return lines.map((l) => {
    const f = (...xs: string[]) => xs.join('\t');
    switch (l.kind) {
      case 'root': checkPath(l.src, l.src, true); return f('root', '-', l.src, '-');
      case 'bind': checkPath(l.src, l.src, true); checkPath(l.dst, l.dst, true); return f('bind', l.mode, l.src, l.dst);
      case 'tmpfs': checkPath(l.dst, l.dst, true); return f('tmpfs', l.mode, '-', l.dst);
      case 'dev': checkPath(l.dst, l.dst, true); return f('dev', '-', '-', l.dst);
      case 'copy': checkPath(l.src, l.src, true); checkPath(l.dst, l.dst, true); return f('copy', '-', l.src, l.dst);
      case 'file': checkPath(l.src, l.src, true); checkPath(l.dst, l.dst, true); return f('file', l.mode, l.src, l.dst);
      case 'mkdir': checkPath(l.dst, l.dst, true); return f('mkdir', l.mode, '-', l.dst);
    }
  }).join('\n') + '\n';
}

/** The controller's side: its root read-only, a private /dev, and fresh /tmp, /var/tmp, /root, /run. */
export function controllerLayout(root: string): SpecLine[] {
  return [
    { kind: 'root', src: root },
    { kind: 'dev', dst: '/dev' },
    { kind: 'tmpfs', mode: '1777', dst: '/tmp' },
    { kind: 'tmpfs', mode: '1777', dst: '/var/tmp' },
    { kind: 'tmpfs', mode: '0700', dst: '/root' },
    { kind: 'tmpfs', mode: '0755', dst: '/run' },
  ];
}

export interface ImageLayoutOptions {
  /** The image's root tree on the host. */
  tree: string;
  /** The build-time facade (src/sandbox/facade.ts), read-only at /run/kiln/facade in the image. */
  facade: string;
  /** An empty file: the image's module table starts empty (the image's kernel is not running). */
  emptyFile: string;
  /** A resolv.conf for the image while it is built (the sandbox's DNS), or none. */
  resolvConf?: string;
  /** Extra binds into the image (apt caches, a locked build's repository), in order. */
  binds?: SpecLine[];
}

/**
 * The image as the chroot connection's target: its tree (idmapped, writable), a private /dev and
 * /run, a writable copy of the host's /proc/sys and an empty module table (both in /run/kiln), the
 * facade, and the caller's binds. phase B adds proc, sysfs and devpts.
 */
export function imageLayout(o: ImageLayoutOptions): SpecLine[] {
  const lines: SpecLine[] = [
    { kind: 'bind', mode: 'rw', src: o.tree, dst: IMAGE },
    { kind: 'dev', dst: `${IMAGE}/dev` },
    { kind: 'tmpfs', mode: '0755', dst: `${IMAGE}/run` },
    { kind: 'mkdir', mode: '1777', dst: `${IMAGE}/run/lock` },
    { kind: 'copy', src: '/proc/sys', dst: `${IMAGE_KILN}/sysctl` },
    { kind: 'mkdir', mode: '0755', dst: `${IMAGE_KILN}/state` },
    { kind: 'mkdir', mode: '1777', dst: `${IMAGE_KILN}/tmp` },
    { kind: 'file', mode: '0644', src: o.emptyFile, dst: `${IMAGE_KILN}/state/modules` },
    { kind: 'bind', mode: 'ro', src: o.facade, dst: `${IMAGE_KILN}/facade` },
  ];
  if (o.resolvConf) {
    lines.push({ kind: 'file', mode: '0644', src: o.resolvConf, dst: `${IMAGE}/run/systemd/resolve/stub-resolv.conf` });
    lines.push({ kind: 'file', mode: '0644', src: o.resolvConf, dst: `${IMAGE}/run/systemd/resolve/resolv.conf` });
  }
  return [...lines, ...(o.binds ?? [])];
}

/**
 * A path in the image tree that the host's root may write or mount on: every component must be a
 * real directory (the last a directory or a file, by `last`), never a symlink (a hostile tree's
 * /run -> /etc would otherwise send the host's root out of the tree). Missing components are
 * created, without following links. Returns the host path.
 */
export function treePath(tree: string, rel: string, last: 'dir' | 'file', why: string): string {
  const parts = rel.split('/').filter(Boolean);
  let p = tree;
  parts.forEach((name, i) => {
    p = join(p, name);
    const isLast = i === parts.length - 1;
    let st;
    try { st = lstatSync(p); } catch { st = undefined; }
    const shown = `/${parts.slice(0, i + 1).join('/')}`;
    if (st?.isSymbolicLink()) {
      throw new KilnError(`the image tree's ${shown} is a symlink: ${why}, and Kiln does not follow links out of the tree`, {
        hint: 'an image must have real directories at /proc, /sys, /dev, /run, /usr/sbin and the apt cache paths',
      });
    }
    if (!st) {
      if (isLast && last === 'file') writeFileSync(p, '', { flag: 'wx', mode: 0o644 });
      else mkdirSync(p, { mode: 0o755 });
    } else if (!isLast && !st.isDirectory()) {
      throw new KilnError(`the image tree's ${shown} is not a directory`, { hint: `${why}, below it` });
    }
  });
  return p;
}

/**
 * Mount points inside the image tree that phase A (the host's root) will mount on: every one must
 * be a real directory or file in the tree, never a symlink (a hostile tree's /run -> /etc would
 * otherwise have the host's root write and mount outside it). Missing ones are created, as root
 * and without following links. Mount points under a tmpfs or /dev the layout creates are Kiln's.
 */
export function prepareMountPoints(tree: string, lines: readonly SpecLine[], extra: readonly string[] = ['/proc', '/sys']): void {
  const ours: string[] = [];
  const check = (dst: string, file: boolean) => {
    if (dst === IMAGE || !dst.startsWith(`${IMAGE}/`)) return;
    if (ours.some((o) => dst === o || dst.startsWith(`${o}/`))) return;
    treePath(tree, dst.slice(IMAGE.length + 1), file ? 'file' : 'dir', 'the build sandbox mounts there');
  };
  for (const e of extra) check(`${IMAGE}${e}`, false);
  for (const l of lines) {
    if (l.kind === 'root') continue;
    if (l.kind === 'tmpfs' || l.kind === 'dev') { check(l.dst, false); ours.push(l.dst); continue; }
    if (l.kind === 'bind') {
      let file = false;
      try { file = !lstatSync(l.src).isDirectory(); } catch { /* phase A reports a missing source */ }
      check(l.dst, file);
      continue;
    }
    check(l.dst, l.kind === 'file');
  }
}
