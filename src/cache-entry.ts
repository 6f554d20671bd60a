/**
 * A cached file beside a JSON record of it (<key>.tar + <key>.json in the base tree cache): the
 * record carries the file's sha256 and size, and every use checks them, so a file cut short by a
 * crash, a full disk or a careless copy is found, discarded and built again instead of half used.
 * The record also keeps the file's inode and mtime when it was hashed; while both are unchanged
 * (any write, truncation or copy over the file changes one), a use checks the size and does not
 * read the whole file again. `kiln cache verify` hashes everything.
 * The file is built as a temporary in the cache's own directory (a rename from elsewhere fails
 * with EXDEV when KILN_CACHE_DIR is on another filesystem) and renamed into place once fsynced.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, utimesSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDirSync, fsyncPath, sha256OfFile, writeFileDurable } from './fsio.js';
import type { Logger } from './log.js';
import { processAlive } from './store/lock.js';

export interface EntryRecord {
  sha256: string;
  size: number;
  /** The file's inode and mtime (ns) when it was hashed: while both are unchanged, a use need not hash it again. */
  ino?: string;
  mtimeNs?: string;
}

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
    const st = statSync(file, { bigint: true });
    const size = Number(st.size);
    if (size !== rec.size) problem = `it is ${size} bytes, its record says ${rec.size}`;
    else if (rec.ino !== String(st.ino) || rec.mtimeNs !== String(st.mtimeNs)) {
      // Written, replaced or recorded by an older Kiln since it was hashed: hash it now.
      const sum = await sha256OfFile(file);
      if (sum !== rec.sha256) problem = `its sha256 is ${sum}, its record says ${rec.sha256}`;
      else writeFileDurable(recordFile, JSON.stringify({ ...rec, ino: String(st.ino), mtimeNs: String(st.mtimeNs) }, null, 2));
    }
  }
  if (!problem) {
    // The record's own mtime is the entry's last use (its fingerprint is the file's, not the record's): `kiln cache prune` removes the least recently used.
    const now = new Date();
    try { utimesSync(recordFile, now, now); } catch { /* a read-only cache still serves */ }
    return true;
  }
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
  const st = statSync(file, { bigint: true });
  const r: EntryRecord = { sha256, size, ino: String(st.ino), mtimeNs: String(st.mtimeNs) };
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

/**
 * The digest of a cached directory tree (the tools tree, 600+ MB): every entry's path, type, mode,
 * owner, size, change time (ns) and link target, sorted, hashed. Recorded when the tree is in place
 * and compared on every use, so a file cut short, rewritten or added since (each changes a size or a
 * ctime, which no one can set back) makes the tree a miss, not half used. Stats, not contents: it
 * costs a walk (about 0.3 s), not reading the tree on every build.
 */
export function treeDigest(root: string): string {
  const outer = createHash('sha256');
  const visit = (rel: string) => {
    for (const name of readdirSync(rel ? join(root, rel) : root).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, p), { bigint: true });
      const type = st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'o';
      const extra = type === 'l' ? readlinkSync(join(root, p)) : type === 'o' ? String(st.rdev) : '';
      outer.update(`${p}\0${type}\0${(st.mode & 0o7777n).toString(8)}\0${st.uid}:${st.gid}\0${type === 'f' ? st.size : 0n}\0${st.ctimeNs}\0${extra}\n`);
      if (type === 'd') visit(p);
    }
  };
  visit('');
  return outer.digest('hex');
}

/** Every <key>.<ext> with its record in dir, each hashed in full; damaged ones are removed. Returns the number checked and removed. */
export async function verifyEntries(dir: string, logger: Logger, ext = 'tar'): Promise<{ checked: number; removed: number }> {
  let checked = 0;
  let removed = 0;
  for (const n of existsSync(dir) ? readdirSync(dir).filter((f) => new RegExp(`^[0-9a-f]{64}\\.${ext}$`).test(f)) : []) {
    const file = join(dir, n);
    const recordFile = file.slice(0, -ext.length) + 'json';
    try {
      const rec = JSON.parse(readFileSync(recordFile, 'utf8')) as EntryRecord;
      delete rec.ino;
      delete rec.mtimeNs;
      writeFileDurable(recordFile, JSON.stringify(rec, null, 2));
    } catch { /* intactEntry reports the record */ }
    checked++;
    if (!(await intactEntry(file, recordFile, logger))) removed++;
  }
  return { checked, removed };
}

/** Newest use first (ISO times compare as strings; an unknown last use sorts last). */
export function byNewestUse(a: { lastUsed: string }, b: { lastUsed: string }): number {
  return a.lastUsed < b.lastUsed ? 1 : a.lastUsed > b.lastUsed ? -1 : 0;
}

/** The folders of the cache that hold file entries (<key>.<ext> + <key>.json), with what each holds. */
export const FILE_ENTRY_KINDS = [
  { dir: 'base', ext: 'tar', kind: 'base tree' },
  { dir: 'images', ext: 'img', kind: 'upstream disk' },
  { dir: 'lock-index', ext: 'Packages', kind: 'lock index' },
] as const;

export interface FileEntryListing { dir: string; key: string; kind: string; file: string; record: string; created: string; lastUsed: string; bytes: number; inputs: Record<string, unknown> }

/**
 * The file entries of a cache (base trees, upstream and parent-release disks, lock indexes), newest
 * use first. lastUsed is the record's mtime, set on every use by intactEntry; bytes are what the
 * file and its record take on disk (holes not counted).
 */
export function listFileEntries(cacheDir: string): FileEntryListing[] {
  const blocks = (p: string) => { try { return lstatSync(p).blocks * 512; } catch { return 0; } };
  const out: FileEntryListing[] = [];
  for (const k of FILE_ENTRY_KINDS) {
    const dir = join(cacheDir, k.dir);
    for (const n of existsSync(dir) ? readdirSync(dir) : []) {
      const m = new RegExp(`^([0-9a-f]{64})\\.${k.ext}$`).exec(n);
      if (!m) continue;
      const file = join(dir, n);
      const record = join(dir, `${m[1]}.json`);
      let rec: Record<string, unknown> = {};
      try { rec = JSON.parse(readFileSync(record, 'utf8')) as Record<string, unknown>; } catch { /* listed, and a miss when used */ }
      const used = (() => { try { return statSync(record).mtime.toISOString(); } catch { return ''; } })();
      const { sha256: _s, size: _z, ino: _i, mtimeNs: _m, created, ...inputs } = rec;
      out.push({ dir: k.dir, key: m[1], kind: k.kind, file, record, created: typeof created === 'string' ? created : '', lastUsed: used, bytes: blocks(file) + blocks(record), inputs });
    }
  }
  return out.sort(byNewestUse);
}

/** Removes one file entry: the record first, so a crash between the two leaves a file that is a miss, never a record naming nothing. */
export function removeFileEntry(e: Pick<FileEntryListing, 'file' | 'record'>): void {
  rmSync(e.record, { force: true });
  rmSync(e.file, { force: true });
}
