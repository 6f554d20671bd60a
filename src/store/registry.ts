/**
 * A small OCI distribution-spec client over fetch: blobs (HEAD, monolithic or chunked upload
 * streamed from disk, verified download), manifests, tags, catalog, referrers API, and auth
 * (basic, and the bearer token flow of the WWW-Authenticate challenge).
 *
 * A registry has no compare-and-swap, so immutability is enforced by checking the tag before
 * uploading and again right before putting the manifest; the window in between is documented.
 *
 * The registry is not trusted with more than its own content. Credentials go only to its origin
 * and to a token service it names over https (targetAccess, realmRefusal); every body is read up
 * to a limit; every blob is held to its descriptor's size and digest while it streams.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { KilnError } from '../errors.js';
import { DigestMismatchError, hashingStream, verifyBytes, verifyingStream, type Progress } from './blobio.js';
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
/** Manifests and indexes (referrers too): the distribution spec has clients "expect to be able to support manifest pushes of at least 4 megabytes"; Kiln's are a few KiB. */
const MAX_MANIFEST_BYTES = 4 << 20;
/** One page of a tag or repository list: 1000 names of at most 255 bytes, with room to spare. */
const MAX_PAGE_BYTES = 4 << 20;
/** Pages of one list, 1000 names each: a registry whose `Link` never ends stops here. */
const MAX_PAGES = 1000;
/** A token service's JSON answer: a token (a JWT, at most a few KiB) and its expiry. */
const MAX_TOKEN_BYTES = 1 << 20;
/** An error body, or one Kiln does not use: only its start is shown, the rest is not read. */
const MAX_ERROR_BYTES = 64 << 10;
/** Redirects of one GET or HEAD (a registry may send blob downloads to its storage). */
const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

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

/**
 * How Kiln may send a request to `target`, a URL the registry at `registry` handed it (an upload
 * Location, a redirect). Credentials go to the registry's own origin (scheme, host and port) only.
 * Another origin (a registry may put uploads or downloads on its storage) gets the request without
 * them, and never over plain http when the registry is https: anyone on the path could then change
 * what Kiln writes or reads. What comes from there is checked as if from the registry itself
 * (blobs and manifests by digest), so following the registry there trusts it with nothing new.
 */
export function targetAccess(registry: URL, target: URL): { credentials: boolean } | { refused: string } {
  if (target.protocol !== 'http:' && target.protocol !== 'https:') return { refused: `${target.protocol} is not http or https` };
  if (target.origin === registry.origin) return { credentials: true };
  if (registry.protocol === 'https:' && target.protocol === 'http:') return { refused: 'it is plain http, and the registry is https' };
  return { credentials: false };
}

/**
 * Why the bearer token service `realm`, named by the registry's challenge, may not have the
 * credentials; null when it may. It is another host in the usual setup (auth.docker.io for Docker
 * Hub), so it need not be the registry's origin, but it must then be https: over plain http the
 * password would cross the network in clear to a host the user never named.
 */
export function realmRefusal(registry: URL, realm: URL): string | null {
  if (realm.protocol === 'https:') return null;
  if (realm.origin === registry.origin) return null;
  if (realm.protocol === 'http:') return 'it is plain http on another origin than the registry';
  return `${realm.protocol} is not https`;
}

/** "4 MiB", "64 KiB", "1024 bytes": a limit as a message states it. */
function sizeText(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20} MiB`;
  if (n >= 1 << 10 && n % (1 << 10) === 0) return `${n >> 10} KiB`;
  return `${n} bytes`;
}

/** A URL as messages show it: without its query, which for an upload may hold a signed token. */
function shown(url: URL | string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
}

function causeText(e: unknown): string {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  return err.cause?.code ?? err.cause?.message ?? err.code ?? err.message ?? String(e);
}

/** Up to `limit` bytes of a body; the rest is left unread and the connection let go. */
async function readAtMost(r: Response, limit: number): Promise<{ bytes: Buffer; complete: boolean }> {
  if (!r.body || r.bodyUsed) return { bytes: Buffer.alloc(0), complete: true };
  const reader = r.body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { bytes: Buffer.concat(parts, n), complete: true };
    if (n + value.length > limit) {
      parts.push(value.subarray(0, limit - n));
      await reader.cancel();
      return { bytes: Buffer.concat(parts, limit), complete: false };
    }
    parts.push(value);
    n += value.length;
  }
}

/** Ends a response whose body Kiln does not use, without reading more of it than an error body. */
async function discard(r: Response): Promise<void> {
  await readAtMost(r, MAX_ERROR_BYTES).catch(() => undefined);
}

interface RequestOptions {
  repo?: string;
  push?: boolean;
  headers?: Record<string, string>;
  body?: () => BodyInit | Buffer | undefined;
  /** An absolute URL to use instead of the registry's own `path` (an upload location, a list page). */
  url?: URL;
}

export class RegistryStore implements StoreBackend {
  readonly remote = true;
  readonly indexesReferrers = false;
  readonly location: string;
  private readonly base: string;
  private readonly origin: URL;
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
    this.origin = new URL(this.base);
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
      const r = await this.rawFetch(new URL('/v2/', this.base), { method: 'GET' });
      await discard(r);
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
      const u = this.parseUrl(realm, this.origin, 'the token service of its bearer challenge');
      const refusal = realmRefusal(this.origin, u);
      if (refusal) {
        throw new KilnError(`registry ${this.location} names the token service ${shown(u)}: ${refusal}; Kiln sent it nothing`, {
          hint: 'a token service must use https, or be the registry\'s own address; is this the registry you meant?',
        });
      }
      if (service) u.searchParams.set('service', service);
      if (scope) u.searchParams.set('scope', scope);
      const headers: Record<string, string> = {};
      if (user !== undefined) headers.authorization = 'Basic ' + Buffer.from(`${user}:${password ?? ''}`).toString('base64');
      // No redirects here: one would carry the credentials somewhere the rule above has not checked.
      const r = await this.rawFetch(u, { method: 'GET', headers });
      if (!r.ok) { await discard(r); throw new KilnError(`registry token service ${u.origin} refused: HTTP ${r.status}`, { hint: 'check KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD' }); }
      const body = this.parseJson(await this.readBounded(r, MAX_TOKEN_BYTES, 'token'), 'token', r.url) as { token?: unknown; access_token?: unknown };
      const token = body.token ?? body.access_token;
      if (typeof token !== 'string' || !token) throw new KilnError(`registry token service ${u.origin} returned no token`);
      this.tokens.set(key, token);
      return `Bearer ${token}`;
    }
    return undefined;
  }

  /** One HTTP exchange; redirects come back as they are, so request() decides where credentials go. */
  private async rawFetch(url: URL, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, { ...init, redirect: 'manual' });
    } catch (e) {
      if (url.origin !== this.origin.origin) throw new KilnError(`cannot reach ${shown(url)}, where registry ${this.location} sent Kiln: ${causeText(e)}`);
      throw new KilnError(`cannot reach registry ${this.location}: ${causeText(e)}`, {
        hint: this.base.startsWith('https') ? 'is it running? for a plain-http registry other than localhost pass --insecure' : 'is the registry running?',
      });
    }
  }

  /** A URL the registry named (Location, Link, realm), resolved against the URL it came with. */
  private parseUrl(ref: string, against: URL, what: string): URL {
    try {
      return new URL(ref, against);
    } catch {
      throw new KilnError(`registry ${this.location}: ${what} is not a URL: ${JSON.stringify(ref.slice(0, 200))}`);
    }
  }

  /**
   * One request, with credentials when it goes to the registry itself (targetAccess). A GET or
   * HEAD follows redirects, each hop judged again; other methods get a redirect back as an
   * unexpected status, since their body may be a stream that cannot be sent twice.
   */
  private async request(method: string, path: string, o: RequestOptions = {}): Promise<Response> {
    let url = o.url ?? new URL(`${this.base}${path}`);
    for (let hops = 0; ; hops++) {
      const r = await this.send(method, path, url, o);
      if (!REDIRECT_STATUSES.has(r.status) || (method !== 'GET' && method !== 'HEAD')) return r;
      await discard(r);
      const location = r.headers.get('location');
      if (!location) throw new KilnError(`registry ${this.location}: ${method} ${path} answered HTTP ${r.status} without a Location`);
      if (hops === MAX_REDIRECTS) throw new KilnError(`registry ${this.location}: ${method} ${path} was redirected more than ${MAX_REDIRECTS} times`);
      url = this.parseUrl(location, url, `the redirect of ${method} ${path}`);
    }
  }

  /** One request to `url`, no redirects followed; a 401 from the registry refreshes the credentials once. */
  private async send(method: string, path: string, url: URL, o: RequestOptions): Promise<Response> {
    const access = targetAccess(this.origin, url);
    if ('refused' in access) {
      throw new KilnError(`registry ${this.location} sent ${method} ${path} to ${shown(url)}, which Kiln refuses: ${access.refused}`, {
        hint: 'is this the registry you meant? Kiln follows a registry to another address only over https, and sends its credentials to none',
      });
    }
    const scope = o.repo ? `repository:${this.repoPath(o.repo)}:${o.push ? 'pull,push' : 'pull'}` : null;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...o.headers };
      if (access.credentials) {
        const auth = await this.authHeader(scope, attempt > 0);
        if (auth) headers.authorization = auth;
      }
      const body = o.body?.();
      // Buffer is a Uint8Array, which fetch accepts; the DOM typings only lack the ArrayBufferLike variant.
      const init: RequestInit & { duplex?: 'half' } = { method, headers, body: body as BodyInit | undefined };
      if (body instanceof ReadableStream) init.duplex = 'half';
      const r = await this.rawFetch(url, init);
      if (r.status === 401 && attempt === 0 && access.credentials) {
        await discard(r);
        this.challenge = parseChallenge(r.headers.get('www-authenticate'));
        if (this.challenge.scheme !== 'none') continue;
      }
      if (r.status === 401 || r.status === 403) {
        await discard(r);
        if (!access.credentials) {
          throw new KilnError(`${shown(url)}, where registry ${this.location} sent ${method} ${path}, refused it: HTTP ${r.status}`, {
            hint: 'Kiln sends credentials only to the registry\'s own address; that registry needs URLs that work without them',
          });
        }
        throw new KilnError(`registry ${this.location} refused ${method} ${path}: HTTP ${r.status}`, { hint: 'check KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD' });
      }
      return r;
    }
  }

  /** A body Kiln parses, read up to `limit`: past it the read stops and is refused, naming the URL. */
  private async readBounded(r: Response, limit: number, what: string): Promise<Buffer> {
    let got: { bytes: Buffer; complete: boolean };
    try {
      got = await readAtMost(r, limit);
    } catch (e) {
      throw new KilnError(`registry ${this.location}: reading ${what} from ${shown(r.url)} broke off: ${causeText(e)}`, { hint: 'is the registry still up? run the command again' });
    }
    if (!got.complete) {
      throw new KilnError(`registry ${this.location}: ${what} at ${shown(r.url)} is larger than ${sizeText(limit)}, the most Kiln reads`, {
        hint: 'no registry serves this much for it: this one is misbehaving, or is not the registry you meant',
      });
    }
    return got.bytes;
  }

  private parseJson(bytes: Buffer, what: string, url: string): unknown {
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch {
      throw new KilnError(`registry ${this.location}: ${what} at ${shown(url)} is not JSON`, { detail: bytes.subarray(0, 500).toString('utf8') });
    }
  }

  private async fail(r: Response, what: string): Promise<never> {
    const text = (await readAtMost(r, MAX_ERROR_BYTES).catch(() => ({ bytes: Buffer.alloc(0) }))).bytes.toString('utf8');
    let detail = text.slice(0, 500);
    try {
      const j = JSON.parse(text) as { errors?: { code: string; message: string; detail?: unknown }[] };
      if (j.errors?.length) detail = j.errors.map((e) => `${e.code}: ${e.message}${e.detail ? ` (${JSON.stringify(e.detail)})` : ''}`).join('\n');
    } catch { /* not JSON, or cut off at the limit */ }
    throw new KilnError(`registry ${this.location}: ${what} failed: HTTP ${r.status}`, { detail: detail || undefined });
  }

  private v2(repo: string, rest: string): string {
    return `/v2/${this.repoPath(repo)}/${rest}`;
  }

  // ---- listing ----

  /**
   * A list, page by page through `Link: <…>; rel="next"`. Pages are read from the registry's own
   * origin only: a Link elsewhere is refused rather than followed, since a list is never stored
   * anywhere else and the next request would carry the credentials.
   */
  private async paginate(path: string, repo: string | undefined, pick: (j: unknown) => unknown): Promise<string[] | null> {
    const out: string[] = [];
    let next: URL | null = new URL(`${this.base}${path}`);
    for (let page = 0; next; page++) {
      if (page === MAX_PAGES) {
        throw new KilnError(`registry ${this.location}: GET ${path} goes on for more than ${MAX_PAGES} pages`, { hint: 'the registry\'s list never ends: it is misbehaving, or is not the registry you meant' });
      }
      const r = await this.request('GET', path, { repo, url: next });
      if (r.status === 404) { await discard(r); return null; }
      if (!r.ok) await this.fail(r, `GET ${path}`);
      const names = pick(this.parseJson(await this.readBounded(r, MAX_PAGE_BYTES, `a page of ${path}`), `a page of ${path}`, r.url));
      if (Array.isArray(names)) out.push(...names.filter((n): n is string => typeof n === 'string'));
      const link = r.headers.get('link');
      const m = link ? /<([^>]+)>;\s*rel="?next"?/.exec(link) : null;
      next = m ? this.parseUrl(m[1], next, `the next page of ${path}`) : null;
      if (next && next.origin !== this.origin.origin) {
        throw new KilnError(`registry ${this.location}: the next page of ${path} is on another origin, ${next.origin}; Kiln reads lists only from the registry itself`, {
          hint: 'is this the registry you meant?',
        });
      }
    }
    return out;
  }

  async listRepositories(): Promise<string[]> {
    const all = (await this.paginate('/v2/_catalog?n=1000', undefined, (j) => (j as { repositories?: unknown } | null)?.repositories)) ?? [];
    const p = this.prefix ? `${this.prefix}/` : '';
    return all.filter((r) => r.startsWith(p)).map((r) => r.slice(p.length)).filter((r) => !r.includes('/')).sort();
  }

  async listTags(repo: string): Promise<string[]> {
    return (await this.paginate(this.v2(repo, 'tags/list?n=1000'), repo, (j) => (j as { tags?: unknown } | null)?.tags)) ?? [];
  }

  // ---- blobs ----

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const r = await this.request('HEAD', this.v2(repo, `blobs/${digest}`), { repo });
    if (r.status === 200) { await discard(r); return true; }
    if (r.status === 404) { await discard(r); return false; }
    return this.fail(r, `HEAD blob ${digest}`);
  }

  /** The upload URL a response hands on: relative to the URL it answers, as RFC 9110 has Location. */
  private uploadLocation(r: Response, what: string): URL {
    const loc = r.headers.get('location');
    if (!loc) throw new KilnError(`registry ${this.location}: ${what} answered without a Location for the upload`);
    return this.parseUrl(loc, new URL(r.url), `the upload location of ${what}`);
  }

  async putBlob(repo: string, src: BlobSource, opts: PutBlobOptions = {}): Promise<void> {
    if (await this.hasBlob(repo, src.digest)) return;
    const uploads = this.v2(repo, 'blobs/uploads/');
    const start = await this.request('POST', uploads, { repo, push: true });
    if (start.status !== 202) await this.fail(start, `start upload of ${src.digest}`);
    await discard(start);
    let location = this.uploadLocation(start, `start upload of ${src.digest}`);
    const withDigest = (loc: URL) => { const u = new URL(loc); u.searchParams.set('digest', src.digest); return u; };

    if (src.bytes) {
      verifyBytes(`blob ${src.digest}`, src.bytes, src.digest, src.size);
      const bytes = src.bytes;
      const r = await this.request('PUT', uploads, { repo, push: true, url: withDigest(location), headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) }, body: () => bytes });
      if (r.status !== 201) await this.fail(r, `upload of ${src.digest}`);
      await discard(r);
      return;
    }
    if (!src.file) throw new Error('putBlob: neither file nor bytes');
    const file = src.file;
    // Hash what we send: a local file that changed since its digest was taken is caught here,
    // with its name, before the registry's own check rejects the upload.
    const hs = hashingStream(src.size, opts.onProgress);
    const read = createReadStream(file);
    let readError: Error | undefined;
    // pipe() does not pass a read error on: without this, the upload would wait forever for bytes
    // that never come, and the error, with no listener, would end the process.
    read.on('error', (e) => { readError = e; hs.destroy(e); });
    read.pipe(hs);
    const unreadable = (e: unknown): unknown => readError
      ? new KilnError(`cannot read ${file} to upload it to ${this.location}: ${causeText(readError)}`, { hint: 'the file changed or vanished during the upload; build or pull it again' })
      : e;
    try {
      if (src.size <= this.chunkSize) {
        const body = Readable.toWeb(hs) as ReadableStream;
        const r = await this.request('PUT', uploads, { repo, push: true, url: withDigest(location), headers: { 'content-type': 'application/octet-stream', 'content-length': String(src.size) }, body: () => body });
        if (readError) throw unreadable(undefined);
        const got = hs.digest();
        if (got !== src.digest) throw new DigestMismatchError(`blob ${file}`, src.digest, got);
        if (r.status !== 201) await this.fail(r, `upload of ${file}`);
        await discard(r);
        return;
      }
      const chunks = hs[Symbol.asyncIterator]();
      let offset = 0;
      let pending: Buffer = Buffer.alloc(0);
      let done = false;
      while (!done || pending.length) {
        // Gathered as a list and joined once: joining each 64 KiB read onto the rest copied a 32 MiB
        // chunk hundreds of times over (a 661 MB upload took minutes of CPU).
        const parts: Buffer[] = [pending];
        let have = pending.length;
        while (!done && have < this.chunkSize) {
          const n = await chunks.next();
          if (n.done) done = true;
          else { parts.push(n.value as Buffer); have += (n.value as Buffer).length; }
        }
        pending = parts.length === 1 ? parts[0] : Buffer.concat(parts, have);
        const chunk = pending.subarray(0, this.chunkSize);
        pending = pending.subarray(chunk.length);
        if (!chunk.length) break;
        const end = offset + chunk.length - 1;
        const r = await this.request('PATCH', uploads, { repo, push: true, url: location, headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${end}`, 'content-length': String(chunk.length) }, body: () => chunk });
        if (r.status !== 202) await this.fail(r, `chunk ${offset}-${end} of ${file}`);
        await discard(r);
        if (r.headers.has('location')) location = this.uploadLocation(r, `chunk ${offset}-${end} of ${file}`);
        offset = end + 1;
      }
      if (readError) throw unreadable(undefined);
      const got = hs.digest();
      if (got !== src.digest) throw new DigestMismatchError(`blob ${file}`, src.digest, got);
      const r = await this.request('PUT', uploads, { repo, push: true, url: withDigest(location), headers: { 'content-length': '0' } });
      if (r.status !== 201) await this.fail(r, `finish upload of ${file}`);
      await discard(r);
    } catch (e) {
      throw unreadable(e);
    } finally {
      read.destroy();
    }
  }

  private async getBlobResponse(repo: string, desc: Descriptor): Promise<Response> {
    const r = await this.request('GET', this.v2(repo, `blobs/${desc.digest}`), { repo });
    if (r.status === 404) { await discard(r); throw new KilnError(`blob ${this.blobLocation(repo, desc.digest)} is missing from the registry`); }
    if (!r.ok || !r.body) await this.fail(r, `GET blob ${desc.digest}`);
    return r;
  }

  /**
   * Streams a blob into `sink` through its descriptor's check (verifyingStream): more bytes than
   * the descriptor says stop the download there, and a wrong size or digest rejects this call, so
   * a caller never goes on with what `sink` got.
   */
  private async receiveBlob(repo: string, desc: Descriptor, sink: (source: AsyncIterable<Buffer>) => Promise<void>, onProgress?: Progress): Promise<void> {
    const r = await this.getBlobResponse(repo, desc);
    const what = `blob ${this.blobLocation(repo, desc.digest)}`;
    try {
      await pipeline(Readable.fromWeb(r.body as import('node:stream/web').ReadableStream), verifyingStream(what, desc, onProgress), sink);
    } catch (e) {
      if (e instanceof KilnError) throw e;
      throw new KilnError(`registry ${this.location}: download of ${what} from ${shown(r.url)} broke off: ${causeText(e)}`, { hint: 'is the registry still up? run the command again' });
    }
  }

  async readBlob(repo: string, desc: Descriptor): Promise<Buffer> {
    if (desc.size > MAX_SMALL_BLOB) throw new KilnError(`blob ${desc.digest} is too large to read into memory`);
    const parts: Buffer[] = [];
    await this.receiveBlob(repo, desc, async (source) => { for await (const c of source) parts.push(c); });
    return Buffer.concat(parts);
  }

  async verifyBlob(repo: string, desc: Descriptor, onProgress?: Progress): Promise<void> {
    await this.receiveBlob(repo, desc, async (source) => { for await (const _ of source) { /* drain */ } }, onProgress);
  }

  /** Nothing is left at `dest` unless the whole blob arrived with the right size and digest. */
  async downloadBlob(repo: string, desc: Descriptor, dest: string, onProgress?: Progress): Promise<void> {
    const fh = await fsp.open(dest, 'wx', 0o644);
    let complete = false;
    try {
      await this.receiveBlob(repo, desc, async (source) => {
        for await (const chunk of source) {
          for (let off = 0; off < chunk.length;) off += (await fh.write(chunk, off)).bytesWritten;
        }
      }, onProgress);
      await fh.sync();
      complete = true;
    } finally {
      await fh.close();
      if (!complete) await fsp.rm(dest, { force: true });
    }
  }

  // ---- manifests and tags ----

  async getManifest(repo: string, ref: string): Promise<StoredManifest | null> {
    const r = await this.request('GET', this.v2(repo, `manifests/${ref}`), { repo, headers: { accept: MANIFEST_ACCEPT } });
    if (r.status === 404) { await discard(r); return null; }
    if (!r.ok) await this.fail(r, `GET manifest ${ref}`);
    const bytes = await this.readBounded(r, MAX_MANIFEST_BYTES, `manifest ${ref}`);
    const digest = sha256Digest(bytes);
    const claimed = isDigest(ref) ? ref : r.headers.get('docker-content-digest');
    if (claimed && claimed !== digest) throw new DigestMismatchError(`manifest ${this.reference(repo)}:${ref}`, claimed, digest);
    return { bytes, digest, mediaType: (r.headers.get('content-type') ?? MT.manifest).split(';')[0] };
  }

  async tagExists(repo: string, tag: string): Promise<boolean> {
    const r = await this.request('HEAD', this.v2(repo, `manifests/${tag}`), { repo, headers: { accept: MANIFEST_ACCEPT } });
    if (r.status === 200) { await discard(r); return true; }
    if (r.status === 404) { await discard(r); return false; }
    return this.fail(r, `HEAD manifest ${tag}`);
  }

  private async put(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<string> {
    const r = await this.request('PUT', this.v2(repo, `manifests/${ref}`), { repo, push: true, headers: { 'content-type': mediaType }, body: () => bytes });
    if (r.status !== 201) await this.fail(r, `PUT manifest ${ref}`);
    await discard(r);
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
    if (r.status !== 200 || !(r.headers.get('content-type') ?? '').includes(MT.index)) { await discard(r); return null; }
    return parseIndex(await this.readBounded(r, MAX_MANIFEST_BYTES, `referrers of ${digest}`), `referrers of ${digest}`).manifests;
  }
}
