/**
 * A release's GCE tarball into a Cloud Storage bucket, through the official `@google-cloud/storage`
 * SDK's resumable upload (the JSON API's `uploadType=resumable`: a session URI, chunks of a multiple of
 * 256 KiB, a status query that says how much arrived).
 *
 * - The object's name is fixed by the release (`<prefix><name>-<version>-<digest 12>.tar.gz`) and it is
 *   created only if absent (`ifGenerationMatch: 0`): an object is never overwritten.
 * - Its metadata says whose it is (`kiln-release-digest`, version, commit, the tarball's sha256).
 * - An object already there from this release whose MD5 is the file's is reused: nothing is sent.
 * - The session URI is kept in Kiln's state directory (mode 0600: for a week it lets anyone holding it
 *   write the object) until the upload completes, so a killed run resumes where the service says it
 *   stopped. A session URI that is not on the storage endpoint is never used: the SDK sends the
 *   credentials' token with every request to it.
 * - The file is read once; its sha256 must be the release's and its MD5 the one the service computed
 *   over what it stored, or the object is deleted. So the object holds exactly the release's bytes.
 *
 * Credentials: Google's application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC
 * file, the metadata server). Never logged or recorded.
 */
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Storage, type File, type FileMetadata } from '@google-cloud/storage';
import { KilnError } from '../../errors.js';
import { writeFileAtomic } from '../../fsio.js';
import { humanBytes, humanSeconds, type Logger } from '../../log.js';
import { kilnStateDir } from '../../store/seen.js';

export interface TarballToUpload { name: string; version: string; digest: string; commit: string; file: string; sha256: string; size: number }

export interface GcsTarget { project: string; bucket: string; prefix: string; endpoint?: string }

export interface UploadedObject { bucket: string; object: string; generation: string; existing: boolean; resumedAt: number; sent: number; seconds: number }

export const GCS_META = { digest: 'kiln-release-digest', image: 'kiln-image', version: 'imageversion', commit: 'kiln-commit', sha256: 'kiln-sha256' } as const;

/** Each chunk is one request; the SDK keeps one in memory to resend it. A multiple of 256 KiB. */
const CHUNK = 32 * 1024 * 1024;

export const GCS_DEFAULT_ENDPOINT = 'https://storage.googleapis.com';

export function storageClient(t: Pick<GcsTarget, 'project' | 'endpoint'>): Storage {
  const endpoint = t.endpoint?.replace(/\/+$/, '');
  // A custom endpoint (Private Service Connect, a test stand-in) still gets the credentials: the SDK
  // leaves them off for one unless told.
  return new Storage({ projectId: t.project, ...(endpoint && endpoint !== GCS_DEFAULT_ENDPOINT ? { apiEndpoint: endpoint, useAuthWithCustomEndpoint: true } : {}) });
}

export function objectName(prefix: string, rel: { name: string; version: string; digest: string }): string {
  return `${prefix}${rel.name}-${rel.version}-${rel.digest.replace(/^sha256:/, '').slice(0, 12)}.tar.gz`;
}

/** A Google API error as a KilnError naming what was done and what to do; anything else unchanged. */
export function gceError(e: unknown, what: string): unknown {
  if (e instanceof KilnError || !(e instanceof Error)) return e;
  const msg = e.message.split('\n')[0];
  if (/Could not load the default credentials|Unable to detect a Project Id|invalid_grant|private key/i.test(e.message)) {
    return new KilnError(`${what} failed: no usable Google credentials: ${msg}`, { hint: 'set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, run gcloud auth application-default login, or run on a VM with a service account' });
  }
  const code = (e as { code?: number | string }).code;
  const status = typeof code === 'number' && code >= 100 ? code : (e as { status?: number }).status;
  const sys = typeof code === 'string' ? code : undefined;
  const hint = status === 401 || status === 403 ? 'the credentials were refused or lack a role: roles/storage.objectAdmin on the bucket and roles/compute.storageAdmin on the project'
    : status === 404 ? 'check publish.gce.project and publish.gce.bucket'
      : sys && /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|CERT|SELF_SIGNED/.test(sys) ? 'check the endpoint and the network'
        : undefined;
  if (status === undefined && !sys) return e;
  return new KilnError(`${what} failed${status ? ` (HTTP ${status})` : sys ? ` (${sys})` : ''}: ${msg}`, { hint });
}

/** A Google call whose failure names what was being done. */
export async function gcp<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try { return await fn(); } catch (e) { throw gceError(e, what); }
}

const statusOf = (e: unknown) => {
  const c = (e as { code?: unknown }).code;
  return typeof c === 'number' ? c : (e as { status?: number }).status;
};
/** The object's metadata, or undefined when it does not exist. */
export async function objectMetadata(file: File, what: string): Promise<FileMetadata | undefined> {
  try {
    return (await file.getMetadata())[0];
  } catch (e) {
    if (statusOf(e) === 404) return undefined;
    throw gceError(e, `reading ${what}`);
  }
}

const uploadsDir = () => join(kilnStateDir(), 'uploads');

interface Session { uri: string; bucket: string; object: string; sha256: string; started: string }

function sessionFile(bucket: string, object: string): string {
  return join(uploadsDir(), `gcs-${createHash('sha256').update(`${bucket}\0${object}`).digest('hex').slice(0, 32)}.json`);
}

/** The kept session of an interrupted upload of these bytes to this object, if it can be trusted. */
function readSession(bucket: string, object: string, sha256: string, endpoint: string, log: Logger): Session | undefined {
  const f = sessionFile(bucket, object);
  let s: Session;
  try { s = JSON.parse(readFileSync(f, 'utf8')) as Session; } catch { return undefined; }
  let origin = '';
  try { origin = new URL(s.uri).origin; } catch { /* not a URL */ }
  if (origin !== new URL(endpoint).origin || s.bucket !== bucket || s.object !== object) {
    log.warn(`gce: ignoring the kept upload session in ${f}: it is not for ${bucket}/${object} on ${endpoint}`);
    rmSync(f, { force: true });
    return undefined;
  }
  return s.sha256 === sha256 ? s : undefined;
}

/** Uploads the tarball (or resumes, or reuses the object), and proves the object holds the release's bytes. */
export async function uploadTarball(rel: TarballToUpload, target: GcsTarget, opts: { logger: Logger; signal?: AbortSignal }): Promise<UploadedObject> {
  const log = opts.logger;
  const endpoint = (target.endpoint ?? GCS_DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const object = objectName(target.prefix, rel);
  const what = `gs://${target.bucket}/${object}`;
  const file = storageClient(target).bucket(target.bucket).file(object);
  const meta = { [GCS_META.digest]: rel.digest, [GCS_META.image]: rel.name, [GCS_META.version]: rel.version, [GCS_META.commit]: rel.commit, [GCS_META.sha256]: rel.sha256 };
  const size = statSync(rel.file).size;
  if (size !== rel.size) throw new KilnError(`${rel.file} is ${size} bytes, the release says ${rel.size}`, { hint: 'the store was changed: kiln verify shows what; pull the release again' });

  const t0 = Date.now();
  const existing = await objectMetadata(file, what);
  if (existing) {
    const m = (existing.metadata ?? {}) as Record<string, string>;
    if (m[GCS_META.digest] !== rel.digest) {
      throw new KilnError(`${what} exists, ${m[GCS_META.digest] ? `uploaded for another release (${m[GCS_META.digest]})` : 'and Kiln did not upload it'}`, { hint: 'an object is never overwritten: delete it if it is wrong, or set publish.gce.object_prefix' });
    }
    const hashes = await hashFile(rel.file);
    if (hashes.sha256 !== rel.sha256) throw tampered(rel);
    if (existing.md5Hash !== hashes.md5 || Number(existing.size) !== size) {
      throw new KilnError(`${what} is this release's, but its bytes differ from the release's tarball (MD5 ${existing.md5Hash}, the file's ${hashes.md5})`, { hint: `delete it (gcloud storage rm ${what}) and publish again` });
    }
    log.info(`gce: ${what} is already uploaded (release ${rel.digest.slice(0, 19)}…): nothing sent`);
    rmSync(sessionFile(target.bucket, object), { force: true });
    return { bucket: target.bucket, object, generation: String(existing.generation), existing: true, resumedAt: 0, sent: 0, seconds: 0 };
  }

  let session = readSession(target.bucket, object, rel.sha256, endpoint, log);
  let offset = 0;
  if (session) {
    const st = await sessionStatus(file, session.uri, what);
    if (st === 'gone') {
      log.warn(`gce: the interrupted upload's session has expired or was cancelled: starting again`);
      rmSync(sessionFile(target.bucket, object), { force: true });
      session = undefined;
    } else offset = st;
  }
  try {
    return await send(rel, file, { bucket: target.bucket, object, what }, meta, size, session && { ...session, offset }, opts, t0);
  } catch (e) {
    throw gceError(e, `uploading ${what}`);
  }
}

/**
 * How much of a kept upload session the service holds (the JSON API's status query: an empty PUT with
 * `Content-Range: bytes *\/*`, answered 308 with a Range), 'gone' when it no longer knows the session.
 */
async function sessionStatus(file: File, uri: string, what: string): Promise<number | 'gone'> {
  const res = await gcp(`asking how much of ${what} was uploaded`, () => file.storage.authClient.request<unknown>({
    url: uri, method: 'PUT', headers: { 'Content-Range': 'bytes */*', 'Content-Length': '0' }, validateStatus: () => true,
  }));
  // Complete, yet the object was not there a moment ago (deleted since): also started again.
  if (res.status === 404 || res.status === 410 || res.status === 200 || res.status === 201) return 'gone';
  if (res.status !== 308) throw new KilnError(`asking how much of ${what} was uploaded: HTTP ${res.status}`, { hint: 'publish again later' });
  const range = /^bytes=0-(\d+)$/.exec(String((res.headers as Record<string, unknown>).range ?? ''));
  return range ? Number(range[1]) + 1 : 0;
}

function tampered(rel: TarballToUpload): KilnError {
  return new KilnError(`the gce tarball of ${rel.name}@${rel.version} does not have the release's sha256 ${rel.sha256}`, { where: { file: rel.file }, hint: 'the store was changed: kiln verify shows what; pull the release again' });
}

/** The two digests a tarball is checked by: sha256 against the release, MD5 against what the service stored. */
class TarballHashes {
  private readonly sha = createHash('sha256');
  private readonly md5 = createHash('md5');
  bytes = 0;
  update(b: Buffer): void { this.sha.update(b); this.md5.update(b); this.bytes += b.length; }
  digest(): { sha256: string; md5: string } { return { sha256: this.sha.digest('hex'), md5: this.md5.digest('base64') }; }
}

async function hashFile(path: string): Promise<{ sha256: string; md5: string }> {
  const h = new TarballHashes();
  for await (const b of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(b as Buffer);
  return h.digest();
}

async function send(rel: TarballToUpload, file: File, to: { bucket: string; object: string; what: string }, meta: Record<string, string>, size: number, session: (Session & { offset: number }) | undefined, opts: { logger: Logger; signal?: AbortSignal }, t0: number): Promise<UploadedObject> {
  const log = opts.logger;
  const { bucket, object, what } = to;
  const sf = sessionFile(bucket, object);
  const resumedAt = session ? Math.min(session.offset, size) : 0;
  const hashes = new TarballHashes();
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) { hashes.update(chunk); cb(null, chunk); },
  });
  let uri = session?.uri;
  if (!uri) {
    // The session is opened on its own (with the credentials: a write stream's own opening leaves them
    // off against a custom endpoint in this SDK), and kept before the first byte goes, so a run killed
    // from now on resumes instead of starting over.
    [uri] = await gcp(`starting the upload of ${what}`, () => file.createResumableUpload({
      metadata: { contentType: 'application/gzip', contentLength: size, metadata: meta },
      preconditionOpts: { ifGenerationMatch: 0 },
    }));
    mkdirSync(uploadsDir(), { recursive: true, mode: 0o700 });
    writeFileAtomic(sf, JSON.stringify({ uri, bucket, object, sha256: rel.sha256, started: new Date().toISOString() } satisfies Session) + '\n', 0o600);
  }
  const stream = file.createWriteStream({
    resumable: true,
    // Without `offset`: the SDK asks the service how much it holds and skips that much of the stream
    // (given an offset, it would take the stream to start there).
    uri,
    chunkSize: CHUNK,
    // Checked here instead, over the whole object (a resumed upload's CRC is only of its second part).
    validation: false,
    metadata: { contentType: 'application/gzip', contentLength: size, metadata: meta },
  });
  let lastReport = 0;
  stream.on('progress', (p: { bytesWritten: number }) => {
    const now = Date.now();
    if (now - lastReport < 2000) return;
    lastReport = now;
    const rate = p.bytesWritten / Math.max(0.001, (now - t0) / 1000);
    log.info(`gce: ${humanBytes(p.bytesWritten)} of ${humanBytes(size)} sent, ${humanBytes(rate)}/s, ${humanSeconds(((size - p.bytesWritten) / Math.max(1, rate)) * 1000)} left`);
  });
  if (session) log.info(`gce: resuming the interrupted upload of ${what} (started ${session.started}) at ${humanBytes(resumedAt)}`);
  else log.info(`gce: uploading ${what} (${humanBytes(size)})`);
  await pipeline(createReadStream(rel.file, { highWaterMark: 4 << 20 }), hasher, stream, { signal: opts.signal });
  const read = hashes.bytes;
  const got = hashes.digest();
  const [m] = await gcp(`reading ${what}`, () => file.getMetadata());
  rmSync(sf, { force: true });
  if (got.sha256 !== rel.sha256 || read !== size || m.md5Hash !== got.md5 || Number(m.size) !== size) {
    await file.delete({ ifGenerationMatch: m.generation }).catch(() => undefined);
    if (got.sha256 !== rel.sha256) throw tampered(rel);
    throw new KilnError(`${what} does not hold the bytes sent (the service's MD5 ${m.md5Hash}, size ${m.size}; sent ${got.md5}, ${size} bytes): it was deleted`, { hint: 'publish again; if it happens again, something between Kiln and the storage endpoint changes data' });
  }
  const seconds = (Date.now() - t0) / 1000;
  const sent = size - resumedAt;
  log.info(`gce: ${what} uploaded: ${humanBytes(sent)} sent${resumedAt > 0 ? ` (resumed at ${humanBytes(resumedAt)})` : ''} in ${humanSeconds(seconds * 1000)}, MD5 ${got.md5} checked`);
  return { bucket, object, generation: String(m.generation), existing: false, resumedAt, sent, seconds };
}
