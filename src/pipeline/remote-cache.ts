/**
 * The step cache shared through a registry (`kiln build --cache oci://host[:port]/prefix`, or
 * KILN_CACHE_REMOTE): what runners with empty disks use instead of building a step again. An entry
 * is one OCI artifact in the repository <prefix>/kiln-cache, tagged with its key (the sha256 of
 * the step's declared inputs, src/pipeline/cache-keys.ts):
 *
 *   manifest  artifactType application/vnd.kiln.cache.v1
 *   config    application/vnd.kiln.cache.entry.v1+json: { kind, key, meta } (the step's record)
 *   layers    application/vnd.kiln.cache.file.v1.tar, one per file: GNU tar's sparse archive of
 *             it; title = its name, with the sha256 and size of the file itself
 *
 * Holes stay holes both ways (a 2 GiB raw disk with 360 MB of data is read, sent and written as
 * its data), so a sparse disk costs what it holds. Not compressed: gzip ran at 30 MB/s here and
 * made a push of the example's entries (3.3 GB of data) take minutes; the formats that are
 * already compressed (GCE, VMDK, OVA) gain nothing, and a registry on the runners' network moves
 * the data faster than one core compresses it.
 *
 * Trust: everything read is verified: the manifest against its tag's digest as the registry
 * states it, the config and every layer against their digests while they stream, every file
 * against the sha256 and size its layer names, the config's kind and key against what was asked.
 * A layer whose stream is longer than its file's size plus the tar headers stops there; a layer is unpacked
 * by GNU tar into an empty directory and must be exactly one regular file there. What cannot be
 * verified is that the entry is what the step would have made: a key names inputs, not outputs.
 * Without signatures the registry's cache is trusted like everyone who can push to it. With them
 * (--cache-sign-key on the runners that push, --cache-trust-key on the ones that read), an entry is
 * used only when a trusted key signed "kiln-cache <kind> <key> <config digest>\n": the config lists
 * every file's name, sha256 and size, which the layers must match, so a registry (or a runner
 * without the key) can drop an entry but never change or add one. The signature is an annotation of
 * the entry's manifest (dev.kiln.cache.signature: { kind, signer, signature }), so an entry and its
 * signature appear with one tag. `kiln rebuild` and --no-cache never use the cache, and a release's
 * provenance says which steps came from it, and who signed them.
 *
 * The local cache comes first; a remote hit becomes a local entry; what a build makes is pushed
 * in the background while later steps run, and flushed when the build ends. A cache that cannot be
 * reached or written is a warning: it never fails a build.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { removeDeadTemps } from '../cache-entry.js';
import { KilnError } from '../errors.js';
import { sha256OfFile } from '../fsio.js';
import type { Logger } from '../log.js';
import { TagExistsError } from '../store/backend.js';
import { hashingStream } from '../store/blobio.js';
import { jsonBlob, MT, parseManifest, type Descriptor, type ImageManifest } from '../store/oci.js';
import { RegistryStore } from '../store/registry.js';
import { checkSignature, type KeyKind, type Signer, type TrustedKey } from '../store/signing.js';

export const CACHE_REPO = 'kiln-cache';
export const CACHE_MT = {
  artifact: 'application/vnd.kiln.cache.v1',
  config: 'application/vnd.kiln.cache.entry.v1+json',
  file: 'application/vnd.kiln.cache.file.v1.tar',
} as const;
const ANN_TITLE = 'org.opencontainers.image.title';
const ANN_SHA256 = 'dev.kiln.cache.sha256';
const ANN_SIZE = 'dev.kiln.cache.size';
const ANN_SIGNATURE = 'dev.kiln.cache.signature';
/** An armored signature is under 1 KiB; more is not one. */
const MAX_SIGNATURE_CHARS = 16 << 10;
const NAME = /^[a-z0-9][a-z0-9._-]*$/i;
const MAX_FILES = 16;
/** Larger than any disk Kiln writes: a layer claiming more is refused before it is read. */
const MAX_FILE_BYTES = 2 ** 40;

export interface RemoteFile { name: string; path: string; sha256: string; size: number }
export interface RemoteEntry { meta: Record<string, unknown>; files: RemoteFile[]; /** Removes files made only to be pushed. */ cleanup?: () => void }

export interface RemoteCacheStats { hits: string[]; pushed: string[]; failed: string[]; /** Who signed the entries used (with --cache-trust-key). */ signers: string[] }

/** What an entry's signature covers: its kind, its key and its config (which lists every file's sha256 and size). */
export function cacheSignaturePayload(kind: string, key: string, configDigest: string): Buffer {
  return Buffer.from(`kiln-cache ${kind} ${key} ${configDigest}\n`);
}

/** Bytes a file's tar stream may have beyond the file's own size: headers and a sparse map. */
const TAR_SLACK = 16 << 20;

/** Stops a stream at `limit` bytes: a layer longer than its file (with the headers) is refused there. */
function capped(limit: number, what: string): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > limit) cb(new KilnError(`${what} is longer than its file's size with the tar headers (${limit} bytes)`));
      else cb(null, chunk);
    },
  });
}

/**
 * A child process's exit: rejects with its stderr on a non-zero status, except exit 1 when every
 * line it wrote matches harmless (GNU tar's exit 1 is "some files differ": a warning, not a failure).
 */
function exited(child: ChildProcess, what: string, harmless?: RegExp): Promise<void> {
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { if (err.length < 4000) err += d; });
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (code, sig) => {
      const lines = err.trim().split('\n').filter(Boolean);
      if (code === 0 || (code === 1 && harmless && lines.length > 0 && lines.every((l) => harmless.test(l)))) res();
      else rej(new KilnError(`${what} failed (${sig ?? `exit ${code}`}): ${lines.slice(-3).join('; ')}`));
    });
  });
}

/**
 * What tar says when a file's ctime moved while it read it. A cache entry's files are written once
 * (renamed into place) and never rewritten, but a later step hard-links the raw disk out of its entry
 * while the push reads it, which moves the ctime; the bytes are the same. (Were they not, the puller's
 * check of every file's sha256 would refuse the entry.)
 */
const FILE_CHANGED = /: file changed as we read it$/;

/**
 * A file as a layer: GNU tar's sparse archive of it (holes are read as holes, SEEK_HOLE, so a 2 GiB
 * raw disk with 360 MB of data costs 360 MB). Returns the layer's digest and size.
 */
async function packLayer(file: string, out: string, signal: AbortSignal): Promise<{ digest: string; size: number }> {
  const tar = spawn('tar', ['--sparse', '--format=posix', '--numeric-owner', '--owner=0', '--group=0', '--mtime=@0', '-cf', '-', '-C', dirname(file), basename(file)], { stdio: ['ignore', 'pipe', 'pipe'], signal });
  const done = exited(tar, `tar of ${file}`, FILE_CHANGED);
  const hs = hashingStream(Number.MAX_SAFE_INTEGER);
  await Promise.all([pipeline(tar.stdout!, hs, createWriteStream(out), { signal }), done]);
  return { digest: hs.digest(), size: hs.bytes() };
}

/**
 * A downloaded layer unpacked into dir, which must be empty: GNU tar keeps every member inside it
 * (it refuses "..", strips a leading "/"), owners are not restored, and the result must be exactly
 * one regular file, returned. The stream into tar stops at the file's size plus its headers.
 */
async function unpackLayer(layer: string, dir: string, size: number, what: string): Promise<string> {
  const tar = spawn('tar', ['-xf', '-', '-C', dir, '--no-same-owner', '--no-same-permissions', '--no-overwrite-dir'], { stdio: ['pipe', 'ignore', 'pipe'] });
  const done = exited(tar, `tar -x of ${what}`);
  const [fed, ran] = await Promise.allSettled([pipeline(createReadStream(layer), capped(size + TAR_SLACK, what), tar.stdin!), done]);
  // The cap's refusal first (tar then fails on the cut archive), then tar's own error (a member it
  // refused). tar stops reading at the archive's end marker, before the zero blocks after it: that
  // broken pipe is the normal end (the blob was verified whole when it was downloaded).
  if (fed.status === 'rejected' && fed.reason instanceof KilnError) throw fed.reason;
  if (ran.status === 'rejected') throw ran.reason;
  if (fed.status === 'rejected') {
    const code = (fed.reason as NodeJS.ErrnoException).code;
    if (code !== 'EPIPE' && code !== 'ERR_STREAM_PREMATURE_CLOSE') throw fed.reason;
  }
  const names = readdirSync(dir);
  const only = names.length === 1 ? join(dir, names[0]) : '';
  if (!only || !lstatSync(only).isFile()) throw new KilnError(`${what} holds ${names.length === 1 ? `${names[0]}, not a regular file` : `${names.length} entries`}; a cache layer holds one file`);
  return only;
}

export class RemoteCache {
  readonly location: string;
  readonly push: boolean;
  /** Why nothing is pushed, for the summary line (when push is false). */
  readonly pushOff?: string;
  private readonly registry: RegistryStore;
  private queue: Promise<void> = Promise.resolve();
  private readonly abort = new AbortController();
  readonly stats: RemoteCacheStats = { hits: [], pushed: [], failed: [], signers: [] };
  private readonly signer?: Signer;
  /** Non-empty: an entry is used only when one of these keys signed it. */
  readonly trust: readonly TrustedKey[];

  /**
   * scratch: a directory of the cache's own for what is made only to be pushed (compressed layers, tarballs).
   * signer: signs what this runner pushes; trust: the keys whose signatures make an entry usable (none: any entry is).
   */
  constructor(spec: string, readonly scratchDir: string, private readonly logger: Logger, opts: { insecure?: boolean; push?: boolean; signer?: Signer; trust?: readonly TrustedKey[] } = {}) {
    this.location = spec;
    this.registry = new RegistryStore(spec, { insecure: opts.insecure, user: process.env.KILN_REGISTRY_USER, password: process.env.KILN_REGISTRY_PASSWORD });
    this.signer = opts.signer;
    this.trust = opts.trust ?? [];
    // A runner that requires signed entries and cannot sign its own pushes nothing: an unsigned entry
    // would be of no use to the runners that trust the same keys, and would hold the key's tag (tags
    // are never replaced) so that no signed entry could be pushed under it.
    const wanted = opts.push ?? process.env.KILN_CACHE_REMOTE_PUSH !== '0';
    this.push = wanted && !(this.trust.length && !this.signer);
    if (!wanted) this.pushOff = 'KILN_CACHE_REMOTE_PUSH=0';
    else if (!this.push) this.pushOff = 'it requires signed entries (--cache-trust-key) and has no --cache-sign-key to sign its own';
  }

  /** Where an entry is: host/prefix/kiln-cache:<key>. */
  reference(key: string): string {
    return `${this.registry.reference(CACHE_REPO)}:${key}`;
  }

  /**
   * The entry kind/key, its files downloaded into dir and verified; undefined when the registry has
   * none. Throws (naming the entry) when what it has fails a check: the caller warns and builds.
   */
  async pull(kind: string, key: string, dir: string): Promise<RemoteEntry | undefined> {
    checkKey(key);
    const stored = await this.registry.getManifest(CACHE_REPO, key);
    if (!stored) return undefined;
    const where = this.reference(key);
    const m = parseManifest(stored.bytes, where);
    if (m.artifactType !== CACHE_MT.artifact || m.config.mediaType !== CACHE_MT.config) throw new KilnError(`${where} is not a Kiln cache entry (artifactType ${m.artifactType ?? 'none'})`);
    if (m.layers.length > MAX_FILES) throw new KilnError(`${where} has ${m.layers.length} files; a cache entry has at most ${MAX_FILES}`);
    // Signed entries first, before a byte of their files is downloaded: a forged entry costs one small read.
    const signer = this.trust.length ? await this.checkSigned(m, kind, key, where) : undefined;
    let config: { kind?: unknown; key?: unknown; meta?: unknown; files?: unknown };
    try {
      config = JSON.parse((await this.registry.readBlob(CACHE_REPO, m.config)).toString('utf8')) as typeof config;
    } catch (e) {
      if (e instanceof KilnError) throw e;
      throw new KilnError(`${where} has a config that is not JSON (${(e as Error).message})`);
    }
    if (config.kind !== kind || config.key !== key) throw new KilnError(`${where} is an entry for ${String(config.kind)} ${String(config.key).slice(0, 12)}, not ${kind} ${key.slice(0, 12)}`);
    if (!config.meta || typeof config.meta !== 'object') throw new KilnError(`${where} has no record of its step`);
    const listed = m.layers.map((l) => layerFile(l, where));
    // A signature covers the config, so the files a signed entry may hold are the ones its config lists.
    if (signer && JSON.stringify(config.files) !== JSON.stringify(listed)) throw new KilnError(`${where}: its layers are not the files its signed config lists`);
    mkdirSync(dir, { recursive: true });
    const files: RemoteFile[] = [];
    for (const [i, l] of m.layers.entries()) {
      const f = listed[i];
      if (files.some((x) => x.name === f.name)) throw new KilnError(`${where} names the file ${f.name} twice`);
      const blob = join(dir, `${f.name}.layer`);
      const unpacked = join(dir, `${f.name}.d`);
      const path = join(dir, f.name);
      try {
        await this.registry.downloadBlob(CACHE_REPO, l, blob);
        mkdirSync(unpacked);
        const got = await unpackLayer(blob, unpacked, f.size, `${where} ${f.name}`);
        const st = statSync(got);
        // The size first: hashing what a layer claims is a terabyte of holes would take as long.
        if (st.size !== f.size) throw new KilnError(`${f.name} unpacks to ${st.size} bytes; its layer says ${f.size}`);
        const sum = await sha256OfFile(got);
        if (sum !== f.sha256) throw new KilnError(`${f.name} unpacks to sha256 ${sum}; its layer says ${f.sha256}`);
        renameSync(got, path);
      } catch (e) {
        throw new KilnError(`${where}: ${(e as Error).message}`);
      } finally {
        rmSync(blob, { force: true });
        rmSync(unpacked, { recursive: true, force: true });
      }
      files.push({ ...f, path });
    }
    this.stats.hits.push(`${kind} ${key.slice(0, 12)}`);
    if (signer && !this.stats.signers.includes(signer)) this.stats.signers.push(signer);
    return { meta: config.meta as Record<string, unknown>, files };
  }

  /** The signer of an entry whose signature a trusted key made over its kind, key and config; throws otherwise. */
  private async checkSigned(m: ImageManifest, kind: string, key: string, where: string): Promise<string> {
    const text = m.annotations?.[ANN_SIGNATURE];
    const keys = `--cache-trust-key (${this.trust.map((k) => k.source).join(', ')})`;
    if (!text) throw new KilnError(`${where} is not signed, and ${keys} requires a signature`);
    let sig: { kind?: unknown; signer?: unknown; signature?: unknown };
    try {
      if (text.length > MAX_SIGNATURE_CHARS) throw new Error(`${text.length} characters`);
      sig = JSON.parse(text) as typeof sig;
    } catch (e) {
      throw new KilnError(`${where} has an unreadable signature (${(e as Error).message})`);
    }
    if ((sig.kind !== 'ssh' && sig.kind !== 'pgp') || typeof sig.signature !== 'string' || typeof sig.signer !== 'string') throw new KilnError(`${where} has an unreadable signature (expected kind ssh or pgp, signer and signature)`);
    const keyKind: KeyKind = sig.kind;
    const check = await checkSignature({ kind: keyKind, mediaType: keyKind === 'ssh' ? MT.sshSignature : MT.pgpSignature, signature: Buffer.from(sig.signature), signer: sig.signer }, cacheSignaturePayload(kind, key, m.config.digest), [...this.trust]);
    if (!check.valid) throw new KilnError(`${where}: its signature by ${check.signer} does not verify${check.problem ? ` (${check.problem})` : ''}`);
    if (!check.trusted) throw new KilnError(`${where} is signed by ${check.signer}, a key ${keys} does not trust`);
    return check.signer;
  }

  /** Queues an upload of an entry (a no-op when pushing is off); flush() waits for the queue. */
  enqueue(kind: string, key: string, entry: RemoteEntry | (() => RemoteEntry | Promise<RemoteEntry>)): void {
    if (!this.push) return;
    checkKey(key);
    this.queue = this.queue.then(async () => {
      if (this.abort.signal.aborted) return;
      try {
        if (await this.upload(kind, key, entry)) this.stats.pushed.push(`${kind} ${key.slice(0, 12)}`);
      } catch (e) {
        if (this.abort.signal.aborted) return;
        this.stats.failed.push(`${kind} ${key.slice(0, 12)}`);
        this.logger.warn(`could not push ${kind} ${key.slice(0, 12)} to the cache at ${this.location} (${(e as Error).message}); the build goes on`);
      }
    });
  }

  /** True when it uploaded, false when the registry had the entry already (another runner pushed it). */
  private async upload(kind: string, key: string, make: RemoteEntry | (() => RemoteEntry | Promise<RemoteEntry>)): Promise<boolean> {
    if (await this.registry.getManifest(CACHE_REPO, key)) return false;
    // What a killed build left here (named <what>.<pid>.tmp) goes before this one adds its own.
    removeDeadTemps(this.scratchDir);
    const entry = typeof make === 'function' ? await make() : make;
    try {
      return await this.uploadEntry(kind, key, entry);
    } finally {
      entry.cleanup?.();
    }
  }

  private async uploadEntry(kind: string, key: string, entry: RemoteEntry): Promise<boolean> {
    const tmp = join(this.scratchDir, `push-${key.slice(0, 16)}.${process.pid}.tmp`);
    mkdirSync(tmp, { recursive: true });
    try {
      const layers: Descriptor[] = [];
      for (const f of entry.files) {
        if (!NAME.test(f.name)) throw new Error(`bad file name ${f.name}`);
        const packed = join(tmp, `${f.name}.layer`);
        const { digest, size } = await packLayer(f.path, packed, this.abort.signal);
        await this.registry.putBlob(CACHE_REPO, { file: packed, digest, size }, { signal: this.abort.signal });
        layers.push({ mediaType: CACHE_MT.file, digest, size, annotations: { [ANN_TITLE]: f.name, [ANN_SHA256]: f.sha256, [ANN_SIZE]: String(f.size) } });
        rmSync(packed, { force: true });
      }
      // The files again in the config, in the layers' order: what a signature over the config vouches for.
      const configBytes = jsonBlob({ kind, key, meta: entry.meta, files: entry.files.map((f) => ({ name: f.name, sha256: f.sha256, size: f.size })) });
      const config: Descriptor = { mediaType: CACHE_MT.config, digest: `sha256:${createHash('sha256').update(configBytes).digest('hex')}`, size: configBytes.length };
      await this.registry.putBlob(CACHE_REPO, { digest: config.digest, size: config.size, bytes: configBytes });
      const annotations: Record<string, string> = { 'dev.kiln.cache.kind': kind };
      if (this.signer) {
        const sig = await this.signer.sign(cacheSignaturePayload(kind, key, config.digest));
        annotations[ANN_SIGNATURE] = JSON.stringify({ kind: sig.kind, signer: sig.signer, signature: sig.signature.toString('utf8') });
      }
      const manifest: ImageManifest = { schemaVersion: 2, mediaType: MT.manifest, artifactType: CACHE_MT.artifact, config, layers, annotations };
      try {
        await this.registry.createTag(CACHE_REPO, key, Buffer.from(JSON.stringify(manifest)), MT.manifest);
      } catch (e) {
        if (e instanceof TagExistsError) return false; // pushed by another runner meanwhile: equal key, equal output
        throw e;
      }
      return true;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  /** Waits for the queued pushes. */
  async flush(): Promise<void> {
    await this.queue;
  }

  /** Stops pushing (a failed or interrupted build): what is mid-upload is abandoned, nothing is tagged. */
  async cancel(): Promise<void> {
    this.abort.abort();
    await this.queue.catch(() => undefined);
  }
}

function checkKey(key: string): void {
  if (!/^[0-9a-f]{64}$/.test(key)) throw new Error(`not a cache key: ${key}`);
}

function layerFile(l: Descriptor, where: string): Omit<RemoteFile, 'path'> {
  const a = l.annotations ?? {};
  const name = a[ANN_TITLE] ?? '';
  const sha256 = a[ANN_SHA256] ?? '';
  const size = Number(a[ANN_SIZE]);
  if (l.mediaType !== CACHE_MT.file) throw new KilnError(`${where}: a layer of type ${l.mediaType}, expected ${CACHE_MT.file}`);
  if (!NAME.test(name)) throw new KilnError(`${where}: a layer named ${JSON.stringify(name.slice(0, 80))}: expected a plain file name`);
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new KilnError(`${where}: ${name} has no sha256 of its content`);
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_BYTES) throw new KilnError(`${where}: ${name} has no valid size (${a[ANN_SIZE]})`);
  return { name, sha256, size };
}
