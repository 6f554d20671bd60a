/**
 * An exclusive lock file (O_EXCL create) holding the owner's pid and host. A lock whose owner
 * process is gone (kill -9, power loss) is stale and is broken by renaming it away first, so two
 * processes breaking the same stale lock cannot both win.
 */
import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { KilnError } from '../errors.js';
import { isErrno } from './blobio.js';

export interface LockOwner { pid: number; host: string; since: string }

function readOwner(path: string): LockOwner | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LockOwner;
  } catch {
    return null;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return !isErrno(e, 'ESRCH');
  }
}

function isStale(owner: LockOwner | null): boolean {
  // An unreadable lock is a writer killed between create and write: stale.
  if (!owner) return true;
  return owner.host === hostname() && !processAlive(owner.pid);
}

/**
 * The lock appears with its owner already in it: written to a file of this process, then hard-linked
 * to the lock's name (link fails with EEXIST when the lock is held). Created empty and written after,
 * a lock read in between looked unreadable, so stale, and two processes starting at one instant were
 * both let in (seen: two test files building into one directory at once).
 */
function tryCreate(path: string): boolean {
  const mine = `${path}.${process.pid}.new`;
  writeFileSync(mine, JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() } satisfies LockOwner), { mode: 0o644 });
  try {
    linkSync(mine, path);
    return true;
  } catch (e) {
    if (isErrno(e, 'EEXIST')) return false;
    throw e;
  } finally {
    try { unlinkSync(mine); } catch { /* gone */ }
  }
}

function breakIfStale(path: string): void {
  const owner = readOwner(path);
  if (!isStale(owner)) return;
  const aside = `${path}.stale-${process.pid}`;
  try {
    renameSync(path, aside);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return; // someone else broke it
    throw e;
  }
  // We may have renamed a lock taken in between by a live process; give it back.
  const moved = readOwner(aside);
  if (moved && !isStale(moved)) {
    try { renameSync(aside, path); } catch { /* best effort */ }
    return;
  }
  try { unlinkSync(aside); } catch { /* gone */ }
}

export interface LockWait {
  /** What is locked, for the error: "the store" (default). */
  what?: string;
  /** Called once when the lock is held by a live process and this one starts waiting. */
  onWait?: (owner: LockOwner | null) => void;
  signal?: AbortSignal;
}

/** Run fn while holding the lock; waits up to timeoutMs for a live holder. */
export async function withLock<T>(path: string, fn: () => Promise<T>, timeoutMs = 30_000, o: LockWait = {}): Promise<T> {
  const start = Date.now();
  let delay = 10;
  let waiting = false;
  while (!tryCreate(path)) {
    breakIfStale(path);
    o.signal?.throwIfAborted();
    if (!waiting) { waiting = true; o.onWait?.(readOwner(path)); }
    if (Date.now() - start > timeoutMs) {
      const owner = readOwner(path);
      throw new KilnError(`${o.what ?? 'the store'} is locked by another Kiln process${owner ? ` (pid ${owner.pid} on ${owner.host} since ${owner.since})` : ''}`, {
        where: { file: path },
        hint: 'wait for it to finish; if that process is gone from another host, remove the lock file',
      });
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 200);
  }
  try {
    return await fn();
  } finally {
    try { unlinkSync(path); } catch { /* already removed */ }
  }
}
