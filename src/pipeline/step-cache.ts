/**
 * The step cache: content-addressed outputs of the costly steps (osbuild's object store is the
 * model). An entry is a directory <cacheDir>/steps/<key>/ holding the step's files and entry.json,
 * where key = sha256 of the step's name and its declared inputs (src/pipeline/cache-keys.ts): the
 * slice of kiln.yaml it reads, the keys of the entries it was made from, the digests of its input
 * files and the versions of the host tools it runs. Equal keys mean equal outputs; any input that
 * could change an output is in its key.
 *
 * Trust: an entry is made complete in a temporary directory beside the others, then renamed into
 * place, so a crash leaves a temporary (removed by the next build), never half an entry. Each file
 * is recorded with its sha256, size, inode and modification time. On every use the size, inode and
 * mtime are compared (any write through the file, a truncation, a copy over it changes one); if one
 * differs the file is hashed, and a digest that differs makes the whole entry a miss, removed with
 * a warning, never an artifact. `kiln cache verify` hashes every file. Artifacts that reach a
 * release are hashed once more by the store as it copies them (src/store/layout.ts).
 *
 * Files enter and leave the cache as hard links where they can (same filesystem; a copy
 * otherwise): a cache hit costs no copy. Entries are read-only (0444), so a tool that opens an
 * output for writing fails instead of changing the cached copy.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, type BigIntStats } from 'node:fs';
import { chmod, link, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { copyFileSparse, fsyncDirSync, fsyncPath, sha256OfFile, writeFileDurable } from '../fsio.js';
import { KilnError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseSize } from '../template/schema.js';
import { byNewestUse, listFileEntries, removeDeadTemps, removeFileEntry, FILE_ENTRY_KINDS } from '../cache-entry.js';
import type { RemoteCache } from './remote-cache.js';

/** Bumped when the entry format or the meaning of a key changes: old entries are then misses. */
const CACHE_FORMAT = 1;
const ENTRY = 'entry.json';
const USED = 'used';
const NAME = /^[a-z0-9][a-z0-9._-]*$/i;

export interface CachedFile { name: string; size: number; sha256: string; ino: string; mtimeNs: string }

export interface CacheEntryRecord<D = unknown> {
  kiln: number;
  step: string;
  key: string;
  created: string;
  /** The inputs the key was made from (digests and settings), for `kiln cache list` and for people. */
  inputs: Record<string, unknown>;
  data: D;
  files: CachedFile[];
}

export interface CacheHit<D> {
  key: string;
  dir: string;
  data: D;
  /** Path of one of the entry's files (read-only: link or copy it out, never write it). */
  file(name: string): string;
}

export interface PutFile {
  name: string;
  /** Linked into the entry (copied when another filesystem): the source is left in place. */
  from: string;
  /** Its sha256 when the caller has it already (else it is hashed). */
  sha256?: string;
}

export interface CacheListing {
  key: string;
  /** The step that made it, or for a file entry what it is (base tree, upstream disk, lock index). */
  step: string;
  created: string;
  lastUsed: string;
  bytes: number;
  inputs: Record<string, unknown>;
  /** A file entry's file and record (src/cache-entry.ts); absent for a step entry. */
  file?: { file: string; record: string };
}

/** The key of a step's output: sha256 over the step's name and its inputs in a canonical order. */
export function cacheKey(step: string, inputs: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson({ kiln: CACHE_FORMAT, step, inputs })).digest('hex');
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v ?? null);
}

const fingerprint = (st: BigIntStats) => ({ ino: String(st.ino), mtimeNs: String(st.mtimeNs) });

export class StepCache {
  readonly dir: string;
  /** Steps whose entry came from the remote cache in this build (for the provenance and the summary). */
  readonly fromRemote: string[] = [];
  /** remote: a registry shared by runners (src/pipeline/remote-cache.ts), read after this cache and written after it. */
  constructor(cacheDir: string, private readonly logger: Logger, readonly remote?: RemoteCache) {
    this.dir = join(cacheDir, 'steps');
  }

  /** The remote's entry for key as a local entry (it is verified on the way); false when it has none or it fails a check. */
  private async pullRemote(step: string, key: string): Promise<boolean> {
    const remote = this.remote;
    if (!remote) return false;
    const tmp = `${this.entryDir(key)}.pull.${process.pid}.tmp`;
    try {
      const got = await remote.pull(step, key, tmp);
      if (!got) return false;
      const meta = got.meta as { inputs?: Record<string, unknown>; data?: unknown };
      await this.put(step, key, meta.inputs ?? {}, meta.data, got.files.map((f) => ({ name: f.name, from: f.path, sha256: f.sha256 })), { push: false });
      if (!existsSync(this.entryDir(key))) return false;
      this.fromRemote.push(step);
      return true;
    } catch (e) {
      this.logger.warn(`the cache at ${remote.location} has ${step} ${key.slice(0, 12)}, but it cannot be used (${(e as Error).message}); building it`);
      return false;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  private entryDir(key: string): string {
    if (!/^[0-9a-f]{64}$/.test(key)) throw new Error(`not a cache key: ${key}`);
    return join(this.dir, key);
  }

  /** The entry for key when it is there and intact; a damaged one is removed (a miss, with a warning). */
  async get<D>(step: string, key: string): Promise<CacheHit<D> | undefined> {
    const dir = this.entryDir(key);
    const local = existsSync(dir);
    if (!local && !(await this.pullRemote(step, key))) return undefined;
    const problem = await this.check(dir, key, step, false);
    if (problem) {
      this.logger.warn(`cached ${step} output ${key.slice(0, 12)} is damaged (${problem}): discarded, building it again`);
      rmSync(dir, { recursive: true, force: true });
      return undefined;
    }
    const rec = readRecord<D>(dir);
    // A runner with a warm cache shares it: the push first asks whether the registry has the entry.
    if (local) this.pushLater(step, key);
    const now = new Date();
    try { utimesSync(join(dir, USED), now, now); } catch { writeFileDurable(join(dir, USED), ''); }
    return { key, dir, data: rec.data, file: (name) => { if (!rec.files.some((f) => f.name === name)) throw new Error(`cache entry ${key} has no file ${name}`); return join(dir, name); } };
  }

  /**
   * Why the entry at dir cannot be used, or undefined when it can. `full` hashes every file;
   * otherwise a file is hashed only when its size, inode or mtime differ from its record.
   */
  private async check(dir: string, key: string, step: string, full: boolean): Promise<string | undefined> {
    let rec: CacheEntryRecord;
    try {
      rec = readRecord(dir);
    } catch (e) {
      return `its ${ENTRY} is missing or unreadable: ${(e as Error).message}`;
    }
    if (rec.kiln !== CACHE_FORMAT || rec.key !== key || rec.step !== step || !Array.isArray(rec.files)) return `its ${ENTRY} is not an entry for ${step} ${key.slice(0, 12)}`;
    for (const f of rec.files) {
      if (!NAME.test(f.name)) return `its record names a file ${JSON.stringify(f.name)}`;
      const p = join(dir, f.name);
      let st: BigIntStats;
      try {
        st = lstatSync(p, { bigint: true });
      } catch {
        return `${f.name} is missing`;
      }
      if (!st.isFile()) return `${f.name} is not a regular file`;
      if (Number(st.size) !== f.size) return `${f.name} is ${st.size} bytes, its record says ${f.size}`;
      const fp = fingerprint(st);
      if (!full && fp.ino === f.ino && fp.mtimeNs === f.mtimeNs) continue;
      const sum = await sha256OfFile(p);
      if (sum !== f.sha256) return `${f.name} has sha256 ${sum}, its record says ${f.sha256}`;
    }
    return undefined;
  }

  /**
   * Stores a step's output under key: its files (linked, or copied across filesystems) and data.
   * An entry already there is kept (equal key, equal output). Never fails the build: a cache that
   * cannot be written is a warning.
   */
  async put<D>(step: string, key: string, inputs: Record<string, unknown>, data: D, files: PutFile[] = [], opts: { push?: boolean } = {}): Promise<void> {
    const dir = this.entryDir(key);
    if (existsSync(dir)) {
      if (opts.push !== false) this.pushLater(step, key);
      return;
    }
    const tmp = `${dir}.${process.pid}.tmp`;
    try {
      mkdirSync(this.dir, { recursive: true });
      removeDeadTemps(this.dir);
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp);
      const recorded: CachedFile[] = [];
      for (const f of files) {
        if (!NAME.test(f.name)) throw new Error(`bad cache file name ${f.name}`);
        const dst = join(tmp, f.name);
        let sha256 = f.sha256;
        try {
          await link(f.from, dst);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EXDEV' && (e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
          const c = await copyFileSparse(f.from, dst, { hash: !sha256 });
          sha256 ??= c.sha256;
        }
        sha256 ??= await sha256OfFile(dst);
        await chmod(dst, 0o444);
        await fsyncPath(dst);
        const st = lstatSync(dst, { bigint: true });
        recorded.push({ name: f.name, size: Number(st.size), sha256, ...fingerprint(st) });
      }
      const rec: CacheEntryRecord<D> = { kiln: CACHE_FORMAT, step, key, created: new Date().toISOString(), inputs, data, files: recorded };
      writeFileDurable(join(tmp, ENTRY), JSON.stringify(rec, null, 2));
      writeFileDurable(join(tmp, USED), '');
      fsyncDirSync(tmp);
      try {
        renameSync(tmp, dir);
      } catch (e) {
        // Another build stored the same key meanwhile: its entry is as good as this one.
        if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
      }
      fsyncDirSync(this.dir);
    } catch (e) {
      this.logger.warn(`could not store ${step}'s output in the cache (${(e as Error).message}); the build goes on`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    if (opts.push !== false && existsSync(dir)) this.pushLater(step, key);
  }

  /**
   * Queues the push of the entry key to the remote cache, from the local entry once put() has made
   * it (the files are the entry's own read-only links, hashed when they went in).
   */
  private pushLater(step: string, key: string): void {
    const remote = this.remote;
    if (!remote?.push) return;
    const dir = this.entryDir(key);
    // Read when the queue reaches it: the entry is complete and in place (put() queues it last).
    remote.enqueue(step, key, () => {
      const rec = readRecord(dir);
      return { meta: { inputs: rec.inputs, data: rec.data }, files: rec.files.map((f) => ({ name: f.name, path: join(dir, f.name), sha256: f.sha256, size: f.size })) };
    });
  }

  /** Every entry, newest use first. */
  list(): CacheListing[] {
    const out: CacheListing[] = [];
    for (const key of existsSync(this.dir) ? readdirSync(this.dir) : []) {
      if (!/^[0-9a-f]{64}$/.test(key)) continue;
      const dir = join(this.dir, key);
      let rec: CacheEntryRecord;
      try { rec = readRecord(dir); } catch { rec = { kiln: 0, step: '?', key, created: '', inputs: {}, data: undefined, files: [] }; }
      out.push({ key, step: rec.step, created: rec.created, lastUsed: lastUsed(dir), bytes: dirBytes(dir), inputs: rec.inputs });
    }
    return out.sort(byNewestUse);
  }

  /** Hashes every file of every entry; damaged entries are removed. Returns the keys removed. */
  async verify(): Promise<{ checked: number; removed: string[] }> {
    const removed: string[] = [];
    const entries = this.list();
    for (const e of entries) {
      const problem = await this.check(join(this.dir, e.key), e.key, e.step, true);
      if (problem) {
        this.logger.warn(`${e.step} ${e.key.slice(0, 12)}: ${problem}: removed`);
        rmSync(join(this.dir, e.key), { recursive: true, force: true });
        removed.push(e.key);
      }
    }
    return { checked: entries.length, removed };
  }

  /**
   * Every entry of the cache, newest use first: the step entries, and the file entries beside them
   * (base trees, upstream and parent-release disks, lock indexes), which a limit must count too.
   */
  listAll(): CacheListing[] {
    const files: CacheListing[] = listFileEntries(join(this.dir, '..')).map((e) => ({ key: e.key, step: e.kind, created: e.created, lastUsed: e.lastUsed, bytes: e.bytes, inputs: e.inputs, file: { file: e.file, record: e.record } }));
    return [...this.list(), ...files].sort(byNewestUse);
  }

  /** Removes least recently used entries, step and file entries alike, until the total is at most maxBytes (0: all). */
  prune(maxBytes: number): { removed: CacheListing[]; keptBytes: number } {
    removeDeadTemps(this.dir);
    for (const k of FILE_ENTRY_KINDS) removeDeadTemps(join(this.dir, '..', k.dir));
    const all = this.listAll();
    let total = all.reduce((s, e) => s + e.bytes, 0);
    const removed: CacheListing[] = [];
    for (const e of [...all].reverse()) {
      if (total <= maxBytes) break;
      if (e.file) removeFileEntry(e.file);
      else rmSync(join(this.dir, e.key), { recursive: true, force: true });
      total -= e.bytes;
      removed.push(e);
    }
    return { removed, keptBytes: total };
  }
}

function readRecord<D>(dir: string): CacheEntryRecord<D> {
  return JSON.parse(readFileSync(join(dir, ENTRY), 'utf8')) as CacheEntryRecord<D>;
}

function lastUsed(dir: string): string {
  try { return statSync(join(dir, USED)).mtime.toISOString(); } catch { return ''; }
}

/** Bytes allocated by a directory's files (a file shared by hard links with an output counts in full). */
export function dirBytes(dir: string): number {
  let n = 0;
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const st = lstatSync(join(dir, name));
    n += st.isDirectory() ? dirBytes(join(dir, name)) : st.blocks * 512;
  }
  return n;
}

/**
 * Puts a cached file at dst (a hard link, or a hole-keeping copy across filesystems). The link
 * shares the entry's read-only inode; `kiln cache` notices if it is ever written.
 */
export async function placeFromCache(src: string, dst: string): Promise<void> {
  await unlink(dst).catch(() => undefined);
  try {
    await link(src, dst);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV' && (e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    await copyFileSparse(src, dst);
    await chmod(dst, 0o644);
  }
}

/** The cache's size limit (step entries, base trees, upstream disks together): KILN_CACHE_MAX_SIZE (e.g. 40GiB), default 20 GiB; a build prunes to it when it ends. */
export function cacheLimit(): number {
  const v = process.env.KILN_CACHE_MAX_SIZE;
  if (!v) return 20 * 1024 ** 3;
  if (/^[0-9]+$/.test(v)) return Number(v);
  try {
    return parseSize(v);
  } catch {
    throw new KilnError(`KILN_CACHE_MAX_SIZE: expected a size such as 20GiB or 500MiB, got ${JSON.stringify(v)}`, { exitCode: 2 });
  }
}
