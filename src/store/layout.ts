/**
 * The local release store: one OCI image layout directory (oci-layout, index.json, blobs/sha256/).
 * Every repository lives in it; index.json entries carry org.opencontainers.image.ref.name =
 * "<repository>:<tag>", so `skopeo inspect oci:<dir>:web:release-0.1.0` finds them.
 *
 * Crash safety: blobs are written to .kiln-tmp/, fsynced and renamed into place once their digest
 * checks, then blobs/sha256/ is fsynced; index.json is replaced the same way under an O_EXCL lock
 * file, so a release reported done survives a power loss. A writer killed at any point leaves only
 * orphan temp files (removed on the next open) and unreferenced blobs. A build may stage an artifact
 * (stageFile: copied and hashed into .kiln-tmp/ while its other formats are still being written), so
 * that the publish only renames it. An artifact is copied (a
 * copy-on-write clone where the filesystem has them), never hard-linked: the build's output stays a
 * writable file of its own, and writing it cannot change a release.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { copyFileSparse, fsyncPath } from '../fsio.js';
import { DigestMismatchError, hashFile, isErrno, verifyBytes, writeStreamToFile, type Progress } from './blobio.js';
import { TagExistsError, type BlobSource, type PublishChanges, type PutBlobOptions, type StagedBlob, type StoreBackend, type StoredManifest } from './backend.js';
import { processAlive, withLock } from './lock.js';
import { ANN, digestHex, isDigest, MT, parseIndex, sha256Digest, type Descriptor, type ImageIndex } from './oci.js';

const TMP = '.kiln-tmp';

/** What was written for a blob (hashed on the way) must be what the publish names: else the source changed after the build hashed it. */
function checkWritten(what: string, src: BlobSource, got: { digest: string; size: number }): void {
  if (got.digest !== src.digest || got.size !== src.size) {
    throw new DigestMismatchError(`${what} ${src.file ?? src.digest}`, `${src.digest} (${src.size} bytes)`, `${got.digest} (${got.size} bytes)`,
      'the file changed after the build recorded its digest; rebuild');
  }
}
const MAX_SMALL_BLOB = 64 * 1024 * 1024;

export class LayoutStore implements StoreBackend {
  readonly remote = false;
  readonly indexesReferrers = false;
  /** Copies stageFile made in this process, by path, with what hashing them found. */
  private readonly staged = new Map<string, StagedBlob>();
  private constructor(readonly location: string) {}

  static async open(dir: string, opts: { create?: boolean } = {}): Promise<LayoutStore> {
    const s = new LayoutStore(dir);
    const exists = await fsp.stat(join(dir, 'oci-layout')).then(() => true, () => false);
    if (!exists) {
      if (!opts.create) throw new KilnError(`no release store at ${dir}`, { hint: 'release something first (kiln build on a release tag), or pass --store' });
      await s.init();
    }
    await s.removeOrphans();
    return s;
  }

  private async init(): Promise<void> {
    await fsp.mkdir(join(this.location, 'blobs', 'sha256'), { recursive: true });
    await fsp.mkdir(join(this.location, TMP), { recursive: true });
    await this.createIfAbsent('index.json', JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests: [] }, null, 2) + '\n');
    await this.createIfAbsent('oci-layout', JSON.stringify({ imageLayoutVersion: '1.0.0' }) + '\n');
  }

  /** Atomic create-if-absent (link fails on EEXIST), so concurrent inits never clobber an index. */
  private async createIfAbsent(name: string, text: string): Promise<void> {
    const tmp = await this.tmpPath(name);
    await writeSynced(tmp, text);
    try {
      await fsp.link(tmp, join(this.location, name));
      await fsyncPath(this.location);
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e;
    } finally {
      await fsp.unlink(tmp).catch(() => undefined);
    }
  }

  /** Scratch space on the store's filesystem (so renames into blobs/ work). */
  tempDir(): string {
    return join(this.location, TMP);
  }

  private async tmpPath(hint: string): Promise<string> {
    await fsp.mkdir(join(this.location, TMP), { recursive: true });
    return join(this.location, TMP, `${process.pid}-${Math.random().toString(36).slice(2)}-${hint.replace(/[^a-z0-9.]/gi, '')}`);
  }

  /** Temp files of writers that are gone (kill -9): named by the writer's pid. */
  private async removeOrphans(): Promise<void> {
    const dir = join(this.location, TMP);
    const names = await fsp.readdir(dir).catch(() => [] as string[]);
    for (const n of names) {
      const pid = Number(n.split('-')[0]);
      if (Number.isInteger(pid) && pid > 0 && !processAlive(pid)) await fsp.rm(join(dir, n), { force: true, recursive: true });
    }
  }

  blobPath(digest: string): string {
    return join(this.location, 'blobs', 'sha256', digestHex(digest));
  }

  blobLocation(_repo: string, digest: string): string {
    return this.blobPath(digest);
  }

  async hasBlob(_repo: string, digest: string): Promise<boolean> {
    return fsp.stat(this.blobPath(digest)).then(() => true, () => false);
  }

  async stageFile(file: string, opts: PutBlobOptions = {}): Promise<StagedBlob> {
    const tmp = await this.tmpPath('staged');
    const c = await copyFileSparse(file, tmp, { hash: true, onProgress: opts.onProgress, signal: opts.signal });
    const blob = { path: tmp, digest: `sha256:${c.sha256}`, size: c.size };
    this.staged.set(tmp, blob);
    return blob;
  }

  async discardStaged(path: string): Promise<void> {
    if (!this.staged.delete(path)) return;
    await fsp.rm(path, { force: true });
  }

  async putBlob(_repo: string, src: BlobSource, opts: PutBlobOptions = {}): Promise<void> {
    if (src.staged) return this.putStaged(_repo, src, src.staged, opts);
    if (await this.hasBlob(_repo, src.digest)) {
      // Content-addressed: an existing blob is reused, but only if it is intact.
      await this.verifyBlob(_repo, { mediaType: '', digest: src.digest, size: src.size }, opts.onProgress);
      return;
    }
    const tmp = await this.tmpPath(digestHex(src.digest).slice(0, 12));
    try {
      let got: { digest: string; size: number };
      if (src.bytes) {
        await writeSynced(tmp, src.bytes);
        got = { digest: sha256Digest(src.bytes), size: src.bytes.length };
      } else if (src.file) {
        const c = await copyFileSparse(src.file, tmp, { hash: true, onProgress: opts.onProgress, signal: opts.signal });
        got = { digest: `sha256:${c.sha256}`, size: c.size };
      } else {
        throw new Error('putBlob: neither file nor bytes');
      }
      checkWritten('blob', src, got);
      await this.moveIntoPlace(tmp, src.digest);
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }

  /** A complete, checked temp file made a read-only blob: renamed into blobs/sha256/, the directory fsynced. */
  private async moveIntoPlace(tmp: string, digest: string): Promise<void> {
    await fsp.chmod(tmp, 0o444);
    await fsp.rename(tmp, this.blobPath(digest));
    await fsyncPath(join(this.location, 'blobs', 'sha256'));
  }

  /**
   * A blob this store staged: the digest and size it hashed while copying must be the ones the
   * publish names (else the file changed between the build's hash and the copy: refused), then the
   * copy is renamed into place, not read again. A path this store did not stage is refused: the
   * scratch directory is not a way to slip bytes past the hash.
   */
  private async putStaged(repo: string, src: BlobSource, path: string, opts: PutBlobOptions): Promise<void> {
    const blob = this.staged.get(path);
    if (!blob) throw new Error(`putBlob: ${path} was not staged by this store`);
    this.staged.delete(path);
    try {
      checkWritten('staged blob', src, blob);
      if (await this.hasBlob(repo, src.digest)) {
        await this.verifyBlob(repo, { mediaType: '', digest: src.digest, size: src.size }, opts.onProgress);
        return;
      }
      await this.moveIntoPlace(path, src.digest);
    } finally {
      await fsp.rm(path, { force: true });
    }
  }

  async readBlob(_repo: string, desc: Descriptor): Promise<Buffer> {
    if (desc.size > MAX_SMALL_BLOB) throw new KilnError(`blob ${desc.digest} is too large to read into memory (${desc.size} bytes)`);
    let bytes: Buffer;
    try {
      bytes = await fsp.readFile(this.blobPath(desc.digest));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw new KilnError(`blob ${desc.digest} is missing from ${this.location}`, { hint: 'the store is incomplete; re-pull or re-release' });
      throw e;
    }
    verifyBytes(`blob ${this.blobPath(desc.digest)}`, bytes, desc.digest, desc.size);
    return bytes;
  }

  async verifyBlob(_repo: string, desc: Descriptor, onProgress?: Progress): Promise<void> {
    const p = this.blobPath(desc.digest);
    let got: { digest: string; size: number };
    try {
      got = await hashFile(p, onProgress);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw new KilnError(`blob ${p} is missing`, { hint: 'the store is incomplete; re-pull or re-release' });
      throw e;
    }
    if (got.digest !== desc.digest) throw new DigestMismatchError(`blob ${p}`, desc.digest, got.digest);
    if (desc.size && got.size !== desc.size) throw new DigestMismatchError(`blob ${p}`, `${desc.size} bytes`, `${got.size} bytes`);
  }

  async downloadBlob(_repo: string, desc: Descriptor, dest: string, onProgress?: Progress): Promise<void> {
    const got = await writeStreamToFile(createReadStream(this.blobPath(desc.digest)), dest, desc.size, onProgress);
    if (got.digest !== desc.digest) {
      await fsp.rm(dest, { force: true });
      throw new DigestMismatchError(`blob ${this.blobPath(desc.digest)}`, desc.digest, got.digest);
    }
  }

  async readIndex(): Promise<ImageIndex> {
    const p = join(this.location, 'index.json');
    return parseIndex(await fsp.readFile(p), p);
  }

  private async writeIndex(idx: ImageIndex): Promise<void> {
    const tmp = await this.tmpPath('index.json');
    const fh = await fsp.open(tmp, 'wx');
    try {
      await fh.writeFile(JSON.stringify(idx, null, 2) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, join(this.location, 'index.json'));
    await fsyncPath(this.location);
  }

  async listRepositories(): Promise<string[]> {
    const idx = await this.readIndex();
    const repos = new Set<string>();
    for (const m of idx.manifests) {
      const ref = m.annotations?.[ANN.refName];
      if (ref?.includes(':')) repos.add(ref.slice(0, ref.lastIndexOf(':')));
    }
    return [...repos].sort();
  }

  async listTags(repo: string): Promise<string[]> {
    const idx = await this.readIndex();
    const prefix = `${repo}:`;
    return idx.manifests.map((m) => m.annotations?.[ANN.refName]).filter((r): r is string => !!r && r.startsWith(prefix)).map((r) => r.slice(prefix.length));
  }

  async getManifest(repo: string, ref: string): Promise<StoredManifest | null> {
    let desc: Descriptor | undefined;
    if (isDigest(ref)) {
      if (!(await this.hasBlob(repo, ref))) return null;
      const bytes = await fsp.readFile(this.blobPath(ref));
      verifyBytes(`manifest ${this.blobPath(ref)}`, bytes, ref);
      return { bytes, digest: ref, mediaType: mediaTypeOf(bytes) };
    }
    const idx = await this.readIndex();
    desc = idx.manifests.find((m) => m.annotations?.[ANN.refName] === `${repo}:${ref}`);
    if (!desc) return null;
    const bytes = await this.readBlob(repo, desc);
    return { bytes, digest: desc.digest, mediaType: desc.mediaType };
  }

  async putManifest(repo: string, bytes: Buffer, mediaType: string): Promise<string> {
    const digest = sha256Digest(bytes);
    await this.putBlob(repo, { digest, size: bytes.length, bytes });
    void mediaType;
    return digest;
  }

  private lockPath(): string {
    return join(this.location, 'index.json.lock');
  }

  async createTag(repo: string, tag: string, bytes: Buffer, mediaType: string, opts: { signal?: AbortSignal } = {}): Promise<string> {
    const digest = await this.putManifest(repo, bytes, mediaType);
    await withLock(this.lockPath(), async () => {
      const idx = await this.readIndex();
      const ref = `${repo}:${tag}`;
      if (idx.manifests.some((m) => m.annotations?.[ANN.refName] === ref)) throw new TagExistsError(repo, tag, this.location);
      // No tag without every blob it names: a concurrent rollback may have removed one this writer reused.
      const missing = await this.missingBlobs(bytes);
      if (missing.length) throw new KilnError(`${repo}@${tag}: blob ${missing[0]} is missing from ${this.location}; the release was not tagged`, { hint: 'publish it again' });
      // The last moment an interrupt can stop the release: after the rename below it is published.
      opts.signal?.throwIfAborted();
      idx.manifests.push({ mediaType, digest, size: bytes.length, annotations: { [ANN.refName]: ref } });
      await this.writeIndex(idx);
    });
    return digest;
  }

  private async missingBlobs(manifestBytes: Buffer): Promise<string[]> {
    const m = JSON.parse(manifestBytes.toString('utf8')) as { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
    const named = [m.config, ...(m.layers ?? []), ...(m.manifests ?? [])].filter((d): d is Descriptor => !!d?.digest);
    const missing: string[] = [];
    for (const d of named) if (!(await this.hasBlob('', d.digest))) missing.push(d.digest);
    return missing;
  }

  /**
   * Undoes a publish that did not reach its tag: puts the bookkeeping tags it moved back, then removes
   * the blobs it wrote that nothing tagged names (a concurrent release may have reused one since).
   */
  async rollback(changes: PublishChanges): Promise<void> {
    await withLock(this.lockPath(), async () => {
      const idx = await this.readIndex();
      for (const t of changes.tags) {
        const ref = `${t.repo}:${t.tag}`;
        idx.manifests = idx.manifests.filter((m) => m.annotations?.[ANN.refName] !== ref);
        if (t.previous) idx.manifests.push({ ...t.previous, annotations: { ...t.previous.annotations, [ANN.refName]: ref } });
      }
      if (changes.tags.length) await this.writeIndex(idx);
      const reachable = await this.reachable(idx);
      for (const d of changes.blobs) if (!reachable.has(d)) await fsp.rm(this.blobPath(d), { force: true });
      await fsyncPath(join(this.location, 'blobs', 'sha256'));
    });
  }

  /** Every digest a tag reaches: manifests, indexes (referrers), their configs and layers. */
  private async reachable(idx: ImageIndex): Promise<Set<string>> {
    const seen = new Set<string>();
    const walk = async (d: Descriptor): Promise<void> => {
      if (seen.has(d.digest)) return;
      seen.add(d.digest);
      if (d.mediaType !== MT.manifest && d.mediaType !== MT.index) return;
      const bytes = await fsp.readFile(this.blobPath(d.digest)).catch(() => null);
      if (!bytes) return;
      let m: { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
      try { m = JSON.parse(bytes.toString('utf8')) as typeof m; } catch { return; }
      for (const c of [m.config, ...(m.layers ?? [])]) if (c?.digest) seen.add(c.digest);
      for (const c of m.manifests ?? []) await walk(c);
    };
    for (const d of idx.manifests) await walk(d);
    return seen;
  }

  async updateTag(repo: string, tag: string, fn: (current: StoredManifest | null) => Promise<{ bytes: Buffer; mediaType: string } | null>): Promise<void> {
    await withLock(this.lockPath(), async () => {
      const current = await this.getManifest(repo, tag);
      const next = await fn(current);
      if (!next) return;
      const digest = await this.putManifest(repo, next.bytes, next.mediaType);
      const idx = await this.readIndex();
      const ref = `${repo}:${tag}`;
      idx.manifests = idx.manifests.filter((m) => m.annotations?.[ANN.refName] !== ref);
      idx.manifests.push({ mediaType: next.mediaType, digest, size: next.bytes.length, annotations: { [ANN.refName]: ref } });
      await this.writeIndex(idx);
    });
  }

  async nativeReferrers(): Promise<Descriptor[] | null> {
    return null;
  }
}

/** A new file whose data is on disk before it is renamed into place. */
async function writeSynced(path: string, data: string | Uint8Array): Promise<void> {
  const fh = await fsp.open(path, 'wx', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function mediaTypeOf(bytes: Buffer): string {
  try {
    return (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType ?? MT.manifest;
  } catch {
    return MT.manifest;
  }
}
