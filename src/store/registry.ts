/**
 * A small OCI distribution-spec client over fetch: blobs (HEAD, monolithic or chunked upload
 * streamed from disk, verified download), manifests, tags, catalog, referrers API, and auth
 * (basic, and the bearer token flow of the WWW-Authenticate challenge).
 *
 * A registry has no compare-and-swap, so immutability is enforced by checking the tag before
 * uploading and again right before putting the manifest; the window in between is documented.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { Readable } from 'node:stream';
import { KilnError } from '../errors.js';
import { DigestMismatchError, hashingStream, verifyBytes, writeStreamToFile, type Progress } from './blobio.js';
import { TagExistsError, type BlobSource, type PutBlobOptions, type StoreBackend, type StoredManifest } from './backend.js';
import { isDigest, MT, parseIndex, sha256Digest, type Descriptor } from './oci.js';

export interface RegistryOptions {
  insecure?: boolean;
  user?: string;
  password?: string;
  /** Blobs larger than this are uploaded in chunks of this size. Default 32 MiB. */
  chunkSize?: number;
}

const MANIFEST_ACCEPT = [MT.manifest, MT.index, 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');
const MAX_SMALL_BLOB = 64 * 1024 * 1024;

interface Challenge { scheme: 'basic' | 'bearer' | 'none'; params: Record<string, string> }

/** Parses `oci://host[:port][/prefix]`. */
export function parseOciUrl(spec: string): { host: string; prefix: string } {
  const m = /^oci:\/\/([^/]+)(\/.*)?$/.exec(spec);
  if (!m) throw new KilnError(`not a registry store: ${spec}`, { hint: 'spell remote stores oci://host[:port][/prefix]' });
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  return { host: m[1], prefix };
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

export function parseChallenge(header: string | null): Challenge {
  if (!header) return { scheme: 'none', params: {} };
  const sp = header.indexOf(' ');
  const scheme = (sp < 0 ? header : header.slice(0, sp)).toLowerCase();
  const params: Record<string, string> = {};
  const re = /([a-zA-Z_]+)="([^"]*)"/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(header))) params[m[1].toLowerCase()] = m[2];
  return { scheme: scheme === 'bearer' ? 'bearer' : scheme === 'basic' ? 'basic' : 'none', params };
}

export class RegistryStore implements StoreBackend {
  readonly remote = true;
  readonly indexesReferrers = false;
  readonly location: string;
  private readonly base: string;
  private readonly prefix: string;
  private challenge: Challenge | null = null;
  private readonly tokens = new Map<string, string>();
  private readonly chunkSize: number;

  constructor(spec: string, private readonly opts: RegistryOptions = {}) {
    const { host, prefix } = parseOciUrl(spec);
    this.location = spec;
    this.prefix = prefix;
    const plain = opts.insecure || isLoopbackHost(host);
    this.base = `${plain ? 'http' : 'https'}://${host}`;
    this.chunkSize = opts.chunkSize ?? 32 * 1024 * 1024;
  }

  /** Repository path of an image name: <prefix>/<name>. */
  repoPath(repo: string): string {
    return this.prefix ? `${this.prefix}/${repo}` : repo;
  }

  /** host[:port]/<prefix>/<name>, the reference other tools (skopeo, docker) use. */
  reference(repo: string): string {
    return `${this.base.replace(/^https?:\/\//, '')}/${this.repoPath(repo)}`;
  }

  blobLocation(repo: string, digest: string): string {
    return `${this.reference(repo)}@${digest}`;
  }

  // ---- HTTP and auth ----

  private async authHeader(scope: string | null, refresh = false): Promise<string | undefined> {
    if (!this.challenge) {
      const r = await this.rawFetch(`${this.base}/v2/`, { method: 'GET' });
      await r.arrayBuffer();
      this.challenge = r.status === 401 ? parseChallenge(r.headers.get('www-authenticate')) : { scheme: 'none', params: {} };
    }
    const { user, password } = this.opts;
    if (this.challenge.scheme === 'basic') {
      if (user === undefined) throw new KilnError(`registry ${this.location} requires authentication`, { hint: 'set KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD' });
      return 'Basic ' + Buffer.from(`${user}:${password ?? ''}`).toString('base64');
    }
    if (this.challenge.scheme === 'bearer') {
      const key = scope ?? '';
      if (!refresh && this.tokens.has(key)) return `Bearer ${this.tokens.get(key)}`;
      const { realm, service } = this.challenge.params;
      if (!realm) throw new KilnError(`registry ${this.location}: bearer challenge without realm`);
      const u = new URL(realm);
      if (service) u.searchParams.set('service', service);
      if (scope) u.searchParams.set('scope', scope);
      const headers: Record<string, string> = {};
      if (user !== undefined) headers.authorization = 'Basic ' + Buffer.from(`${user}:${password ?? ''}`).toString('base64');
      const r = await this.rawFetch(u.toString(), { method: 'GET', headers });
      if (!r.ok) throw new KilnError(`registry token service ${u.origin} refused: HTTP ${r.status}`, { hint: 'check KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD' });
      const body = (await r.json()) as { token?: string; access_token?: string };
      const token = body.token ?? body.access_token;
      if (!token) throw new KilnError(`registry token service ${u.origin} returned no token`);
      this.tokens.set(key, token);
      return `Bearer ${token}`;
    }
    return undefined;
  }

  private async rawFetch(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, { redirect: 'follow', ...init });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new KilnError(`cannot reach registry ${this.location}: ${cause?.code ?? cause?.message ?? (e as Error).message}`, {
        hint: this.base.startsWith('https') ? 'is it running? for a plain-http registry other than localhost pass --insecure' : 'is the registry running?',
      });
    }
  }

  /** One request with auth; a 401 refreshes the credentials once (only for bodies that can be resent). */
  private async request(method: string, path: string, o: { repo?: string; push?: boolean; headers?: Record<string, string>; body?: () => BodyInit | Buffer | undefined; url?: string } = {}): Promise<Response> {
    const scope = o.repo ? `repository:${this.repoPath(o.repo)}:${o.push ? 'pull,push' : 'pull'}` : null;
    const url = o.url ?? `${this.base}${path}`;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...o.headers };
      const auth = await this.authHeader(scope, attempt > 0);
      if (auth) headers.authorization = auth;
      const body = o.body?.();
      // Buffer is a Uint8Array, which fetch accepts; the DOM typings only lack the ArrayBufferLike variant.
      const init: RequestInit & { duplex?: 'half' } = { method, headers, body: body as BodyInit | undefined };
      if (body instanceof ReadableStream) init.duplex = 'half';
      const r = await this.rawFetch(url, init);
      if (r.status === 401 && attempt === 0) {
        await r.arrayBuffer();
        this.challenge = parseChallenge(r.headers.get('www-authenticate'));
        if (this.challenge.scheme !== 'none') continue;
      }
      if (r.status === 401 || r.status === 403) {
        await r.arrayBuffer();
        throw new KilnError(`registry ${this.location} refused ${method} ${path}: HTTP ${r.status}`, { hint: 'check KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD' });
      }
      return r;
    }
  }

  private async fail(r: Response, what: string): Promise<never> {
    const text = await r.text().catch(() => '');
    let detail = text.slice(0, 500);
    try {
      const j = JSON.parse(text) as { errors?: { code: string; message: string; detail?: unknown }[] };
      if (j.errors?.length) detail = j.errors.map((e) => `${e.code}: ${e.message}${e.detail ? ` (${JSON.stringify(e.detail)})` : ''}`).join('\n');
    } catch { /* not JSON */ }
    throw new KilnError(`registry ${this.location}: ${what} failed: HTTP ${r.status}`, { detail: detail || undefined });
  }

  private v2(repo: string, rest: string): string {
    return `/v2/${this.repoPath(repo)}/${rest}`;
  }

  private absolute(location: string): string {
    return new URL(location, this.base).toString();
  }

  // ---- listing ----

  private async paginate<T>(path: string, repo: string | undefined, pick: (j: unknown) => T[]): Promise<T[] | null> {
    const out: T[] = [];
    let next: string | null = `${this.base}${path}`;
    while (next) {
      const r = await this.request('GET', path, { repo, url: next });
      if (r.status === 404) { await r.arrayBuffer(); return null; }
      if (!r.ok) await this.fail(r, `GET ${path}`);
      out.push(...pick(await r.json()));
      const link = r.headers.get('link');
      const m = link ? /<([^>]+)>;\s*rel="?next"?/.exec(link) : null;
      next = m ? this.absolute(m[1]) : null;
    }
    return out;
  }

  async listRepositories(): Promise<string[]> {
    const all = (await this.paginate('/v2/_catalog?n=1000', undefined, (j) => (j as { repositories?: string[] }).repositories ?? [])) ?? [];
    const p = this.prefix ? `${this.prefix}/` : '';
    return all.filter((r) => r.startsWith(p)).map((r) => r.slice(p.length)).filter((r) => !r.includes('/')).sort();
  }

  async listTags(repo: string): Promise<string[]> {
    return (await this.paginate(this.v2(repo, 'tags/list?n=1000'), repo, (j) => (j as { tags?: string[] | null }).tags ?? [])) ?? [];
  }

  // ---- blobs ----

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const r = await this.request('HEAD', this.v2(repo, `blobs/${digest}`), { repo });
    await r.arrayBuffer();
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    return this.fail(r, `HEAD blob ${digest}`);
  }

  async putBlob(repo: string, src: BlobSource, opts: PutBlobOptions = {}): Promise<void> {
    if (await this.hasBlob(repo, src.digest)) return;
    const start = await this.request('POST', this.v2(repo, 'blobs/uploads/'), { repo, push: true });
    if (start.status !== 202) await this.fail(start, `start upload of ${src.digest}`);
    await start.arrayBuffer();
    let location = this.absolute(start.headers.get('location') ?? '');
    const withDigest = (loc: string) => { const u = new URL(loc); u.searchParams.set('digest', src.digest); return u.toString(); };

    if (src.bytes) {
      verifyBytes(`blob ${src.digest}`, src.bytes, src.digest, src.size);
      const bytes = src.bytes;
      const r = await this.request('PUT', '', { repo, push: true, url: withDigest(location), headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) }, body: () => bytes });
      if (r.status !== 201) await this.fail(r, `upload of ${src.digest}`);
      await r.arrayBuffer();
      return;
    }
    if (!src.file) throw new Error('putBlob: neither file nor bytes');
    const file = src.file;
    // Hash what we send: a local file that changed since its digest was taken is caught here,
    // with its name, before the registry's own check rejects the upload.
    const hs = hashingStream(src.size, opts.onProgress);
    if (src.size <= this.chunkSize) {
      const body = Readable.toWeb(createReadStream(file).pipe(hs)) as ReadableStream;
      const r = await this.request('PUT', '', { repo, push: true, url: withDigest(location), headers: { 'content-type': 'application/octet-stream', 'content-length': String(src.size) }, body: () => body });
      const got = hs.digest();
      if (got !== src.digest) throw new DigestMismatchError(`blob ${file}`, src.digest, got);
      if (r.status !== 201) await this.fail(r, `upload of ${file}`);
      await r.arrayBuffer();
      return;
    }
    const whole = createReadStream(file).pipe(hs);
    const chunks = whole[Symbol.asyncIterator]();
    let offset = 0;
    let pending: Buffer = Buffer.alloc(0);
    let done = false;
    while (!done || pending.length) {
      while (!done && pending.length < this.chunkSize) {
        const n = await chunks.next();
        if (n.done) done = true;
        else pending = Buffer.concat([pending, n.value as Buffer]);
      }
      const chunk = pending.subarray(0, this.chunkSize);
      pending = pending.subarray(chunk.length);
      if (!chunk.length) break;
      const end = offset + chunk.length - 1;
      const r = await this.request('PATCH', '', { repo, push: true, url: location, headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${end}`, 'content-length': String(chunk.length) }, body: () => chunk });
      if (r.status !== 202) await this.fail(r, `chunk ${offset}-${end} of ${file}`);
      await r.arrayBuffer();
      location = this.absolute(r.headers.get('location') ?? location);
      offset = end + 1;
    }
    const got = hs.digest();
    if (got !== src.digest) throw new DigestMismatchError(`blob ${file}`, src.digest, got);
    const r = await this.request('PUT', '', { repo, push: true, url: withDigest(location), headers: { 'content-length': '0' } });
    if (r.status !== 201) await this.fail(r, `finish upload of ${file}`);
    await r.arrayBuffer();
  }

  private async getBlobResponse(repo: string, desc: Descriptor): Promise<Response> {
    const r = await this.request('GET', this.v2(repo, `blobs/${desc.digest}`), { repo });
    if (r.status === 404) { await r.arrayBuffer(); throw new KilnError(`blob ${this.blobLocation(repo, desc.digest)} is missing from the registry`); }
    if (!r.ok || !r.body) await this.fail(r, `GET blob ${desc.digest}`);
    return r;
  }

  async readBlob(repo: string, desc: Descriptor): Promise<Buffer> {
    if (desc.size > MAX_SMALL_BLOB) throw new KilnError(`blob ${desc.digest} is too large to read into memory`);
    const r = await this.getBlobResponse(repo, desc);
    const bytes = Buffer.from(await r.arrayBuffer());
    verifyBytes(`blob ${this.blobLocation(repo, desc.digest)}`, bytes, desc.digest, desc.size);
    return bytes;
  }

  async verifyBlob(repo: string, desc: Descriptor, onProgress?: Progress): Promise<void> {
    const r = await this.getBlobResponse(repo, desc);
    const hs = hashingStream(desc.size, onProgress);
    for await (const _ of Readable.fromWeb(r.body as import('node:stream/web').ReadableStream).pipe(hs)) { /* drain */ }
    if (hs.digest() !== desc.digest) throw new DigestMismatchError(`blob ${this.blobLocation(repo, desc.digest)}`, desc.digest, hs.digest());
  }

  async downloadBlob(repo: string, desc: Descriptor, dest: string, onProgress?: Progress): Promise<void> {
    const r = await this.getBlobResponse(repo, desc);
    const got = await writeStreamToFile(Readable.fromWeb(r.body as import('node:stream/web').ReadableStream), dest, desc.size, onProgress);
    if (got.digest !== desc.digest) {
      await fsp.rm(dest, { force: true });
      throw new DigestMismatchError(`blob ${this.blobLocation(repo, desc.digest)}`, desc.digest, got.digest);
    }
  }

  // ---- manifests and tags ----

  async getManifest(repo: string, ref: string): Promise<StoredManifest | null> {
    const r = await this.request('GET', this.v2(repo, `manifests/${ref}`), { repo, headers: { accept: MANIFEST_ACCEPT } });
    if (r.status === 404) { await r.arrayBuffer(); return null; }
    if (!r.ok) await this.fail(r, `GET manifest ${ref}`);
    const bytes = Buffer.from(await r.arrayBuffer());
    const digest = sha256Digest(bytes);
    const claimed = isDigest(ref) ? ref : r.headers.get('docker-content-digest');
    if (claimed && claimed !== digest) throw new DigestMismatchError(`manifest ${this.reference(repo)}:${ref}`, claimed, digest);
    return { bytes, digest, mediaType: (r.headers.get('content-type') ?? MT.manifest).split(';')[0] };
  }

  async tagExists(repo: string, tag: string): Promise<boolean> {
    const r = await this.request('HEAD', this.v2(repo, `manifests/${tag}`), { repo, headers: { accept: MANIFEST_ACCEPT } });
    await r.arrayBuffer();
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    return this.fail(r, `HEAD manifest ${tag}`);
  }

  private async put(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<string> {
    const r = await this.request('PUT', this.v2(repo, `manifests/${ref}`), { repo, push: true, headers: { 'content-type': mediaType }, body: () => bytes });
    if (r.status !== 201) await this.fail(r, `PUT manifest ${ref}`);
    await r.arrayBuffer();
    const digest = sha256Digest(bytes);
    const claimed = r.headers.get('docker-content-digest');
    if (claimed && claimed !== digest) throw new DigestMismatchError(`manifest ${ref} as stored by the registry`, digest, claimed);
    return digest;
  }

  async putManifest(repo: string, bytes: Buffer, mediaType: string): Promise<string> {
    return this.put(repo, sha256Digest(bytes), bytes, mediaType);
  }

  async createTag(repo: string, tag: string, bytes: Buffer, mediaType: string): Promise<string> {
    if (await this.tagExists(repo, tag)) throw new TagExistsError(repo, tag, this.location);
    return this.put(repo, tag, bytes, mediaType);
  }

  async updateTag(repo: string, tag: string, fn: (current: StoredManifest | null) => Promise<{ bytes: Buffer; mediaType: string } | null>): Promise<void> {
    const next = await fn(await this.getManifest(repo, tag));
    if (next) await this.put(repo, tag, next.bytes, next.mediaType);
  }

  async nativeReferrers(repo: string, digest: string): Promise<Descriptor[] | null> {
    const r = await this.request('GET', this.v2(repo, `referrers/${digest}`), { repo, headers: { accept: MT.index } });
    if (r.status !== 200 || !(r.headers.get('content-type') ?? '').includes(MT.index)) { await r.arrayBuffer(); return null; }
    return parseIndex(Buffer.from(await r.arrayBuffer()), `referrers of ${digest}`).manifests;
  }
}
