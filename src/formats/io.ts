/** File helpers shared by the writers: hashing, sparse copies, in-place patches. */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';

export async function hashFile(path: string, hash: Hash = createHash('sha256')): Promise<Hash> {
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash;
}

/**
 * Copies a disk image keeping zero regions as holes: a reflink where the filesystem can, else
 * coreutils' sparse copy (which finds zeros by content, so the result does not depend on how the
 * source happened to be allocated).
 */
export async function copySparse(src: string, dst: string, logger?: Logger): Promise<void> {
  await exec('cp', ['--reflink=auto', '--sparse=always', '--', src, dst], { logger });
}

export { readAt, writeAt } from '../fsio.js';

/** Runs tasks with at most `limit` at a time, in the given order; rejects with the first failure after all started tasks settle. */
export async function runLimited(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < tasks.length && failure === undefined) {
      const t = tasks[next++];
      try { await t(); } catch (e) { failure ??= e; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failure !== undefined) throw failure;
}
