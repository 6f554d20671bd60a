/**
 * A read-only view of an ext4 filesystem inside a disk image file, lossless and without touching
 * the host: fuse2fs serves the file through FUSE (no loop device, no kernel ext4 driver parsing a
 * hostile filesystem), in a mount namespace of its own, so the mount never appears on the host.
 * Kiln reads it through /proc/<pid>/root, which walks that namespace's mounts. fuse2fs runs with
 * a parent-death signal: if Kiln is killed, fuse2fs dies, its namespace goes and the mount with it.
 *
 * Through the kernel's FUSE layer, a directory entry whose name holds a `/` (debugfs 1.47.0 would
 * write such a name outside its destination) makes the directory unreadable (EIO): callers treat
 * every unreadable entry as a finding, never as "nothing there".
 */
import { mkdirSync, mkdtempSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';

export interface MountedTree {
  /** Where the filesystem's root is readable, e.g. /proc/1234/root/<scratch>/mnt. */
  root: string;
  /** Throws unless the view is still the mounted filesystem (so a dead fuse2fs cannot pass for an empty tree). */
  check(): void;
}

const READY_TIMEOUT_MS = 30_000;

/** The filesystem of `file` at byte `offset`, readable by fn; unmounted when fn settles. */
export async function withMountedFilesystem<T>(file: string, offset: number, scratch: string, fn: (tree: MountedTree) => Promise<T>, logger: Logger = silentLogger): Promise<T> {
  mkdirSync(scratch, { recursive: true });
  const mnt = mkdtempSync(join(scratch, 'mnt-'));
  let pid: number | undefined;
  let exited = false;
  let stderr = '';
  // exec starts it with a parent-death signal (setpriv --pdeathsig), which unshare's exec of fuse2fs keeps.
  const run = exec('unshare', [
    '--mount', '--propagation', 'private', '--',
    // -f: stay in the foreground, so this process is fuse2fs and the parent-death signal reaches it.
    'fuse2fs', '-f', file, mnt, '-o', `ro,norecovery,offset=${offset},nosuid,nodev,noexec,kernel_cache,attr_timeout=3600,entry_timeout=3600`,
  ], {
    allowFailure: true, logger,
    onSpawn: (c) => { pid = c.pid; },
    onStderrLine: (l) => { stderr += `${l}\n`; },
  }).finally(() => { exited = true; });
  try {
    if (pid === undefined) throw new KilnError('cannot start fuse2fs', { hint: 'run `kiln doctor` to install it (Debian package fuse2fs)' });
    const root = `/proc/${pid}/root${mnt}`;
    const hostDev = statSync(mnt).dev;
    const mounted = () => { try { return statSync(root).dev !== hostDev; } catch { return false; } };
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!mounted()) {
      if (exited || Date.now() > deadline) {
        const r = await Promise.race([run, new Promise<undefined>((res) => setTimeout(() => res(undefined), 100))]);
        throw new KilnError(`cannot read the ext4 filesystem at byte ${offset} of ${file}`, {
          where: { command: 'fuse2fs' },
          detail: (r?.stderr ?? stderr).trim() || (exited ? 'fuse2fs exited' : `not mounted after ${READY_TIMEOUT_MS / 1000} s`),
          hint: 'the filesystem is damaged or not ext2/3/4; `kiln doctor` installs fuse2fs if it is missing',
        });
      }
      await new Promise((res) => setTimeout(res, 20));
    }
    const dev = statSync(root).dev;
    const check = () => {
      let now: number | undefined;
      try { now = statSync(root).dev; } catch { /* gone */ }
      if (exited || now !== dev) throw new KilnError(`the view of ${file} went away while Kiln was reading it (fuse2fs stopped)`, { detail: stderr.trim() || undefined });
    };
    const result = await fn({ root, check });
    check();
    return result;
  } finally {
    let killer: NodeJS.Timeout | undefined;
    if (pid !== undefined && !exited) {
      // fuse2fs unmounts and exits on SIGTERM; one that hangs is killed (its namespace, and the mount, go with it).
      try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
      killer = setTimeout(() => { try { process.kill(pid as number, 'SIGKILL'); } catch { /* gone */ } }, 5000);
    }
    await run.catch(() => undefined);
    clearTimeout(killer);
    // On the host this was always an empty directory: the mount lived in fuse2fs's namespace only.
    try { rmdirSync(mnt); } catch { /* left for the caller's scratch cleanup */ }
  }
}
