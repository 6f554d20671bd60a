/**
 * A cached file beside a JSON record of it (<key>.tar + <key>.json in the base tree cache): the
 * record carries the file's sha256 and size, and every use checks them, so a file cut short by a
 * crash, a full disk or a careless copy is found, discarded and built again instead of half used.
 * The file is built as a temporary in the cache's own directory (a rename from elsewhere fails
 * with EXDEV when KILN_CACHE_DIR is on another filesystem) and renamed into place once fsynced.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDirSync, fsyncPath, sha256OfFile, writeFileDurable } from './fsio.js';
import type { Logger } from './log.js';
import { processAlive } from './store/lock.js';

export interface EntryRecord { sha256: string; size: number }

/** A temporary name for the entry, in its directory, owned by this process. */
export function entryTemp(file: string): string {
  return `${file}.${process.pid}.tmp`;
}

/** True when file and its record are there and agree; a damaged entry is removed, with a warning. */
export async function intactEntry(file: string, recordFile: string, logger: Logger): Promise<boolean> {
  if (!existsSync(file)) return false;
  let rec: Partial<EntryRecord> | undefined;
  try {
    rec = JSON.parse(readFileSync(recordFile, 'utf8')) as Partial<EntryRecord>;
  } catch {
    rec = undefined;
  }
  let problem: string | undefined;
  if (!rec) problem = `its record ${recordFile} is missing or unreadable`;
  else if (typeof rec.sha256 !== 'string' || typeof rec.size !== 'number') problem = 'its record has no sha256 and size (written by an older Kiln)';
  else {
    const size = statSync(file).size;
    if (size !== rec.size) problem = `it is ${size} bytes, its record says ${rec.size}`;
    else {
      const sum = await sha256OfFile(file);
      if (sum !== rec.sha256) problem = `its sha256 is ${sum}, its record says ${rec.sha256}`;
    }
  }
  if (!problem) return true;
  logger.warn(`cached ${file} is damaged (${problem}): discarded, building it again`);
  rmSync(file, { force: true });
  rmSync(recordFile, { force: true });
  return false;
}

/** Renames a finished temporary (from entryTemp) into place, then writes its record with the digest. */
export async function commitEntry(tmp: string, file: string, recordFile: string, record: object): Promise<EntryRecord> {
  const size = statSync(tmp).size;
  const sha256 = await sha256OfFile(tmp);
  await fsyncPath(tmp);
  await rename(tmp, file);
  fsyncDirSync(join(file, '..'));
  const r: EntryRecord = { sha256, size };
  writeFileDurable(recordFile, JSON.stringify({ ...record, ...r }, null, 2));
  return r;
}

/** Temporaries of builds killed while they made an entry (named <file>.<pid>.tmp). */
export function removeDeadTemps(dir: string): void {
  for (const n of existsSync(dir) ? readdirSync(dir) : []) {
    const pid = Number(/\.(\d+)\.tmp$/.exec(n)?.[1]);
    if (pid && pid !== process.pid && !processAlive(pid)) rmSync(join(dir, n), { recursive: true, force: true });
  }
}
