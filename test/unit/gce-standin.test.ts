import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { request, type RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { protos } from '@google-cloud/compute';
import type { File, Storage } from '@google-cloud/storage';
import { exec } from '../../src/exec.js';
import { crc32c } from '../../src/formats/crc32c.js';
import { GOOGLE_TOKEN_HOSTS, signJwt, startGceStandin, type GceStandin } from '../support/gce-standin.js';

const CHUNK = 256 * 1024;
const GIB = 1024 ** 3;
const BUCKET = 'kiln-images';
const PROJECT = 'kiln-test';
const SCOPE_CLOUD = 'https://www.googleapis.com/auth/cloud-platform';

// =============================================================================================
// The SDK side. The official SDKs cannot be given the stand-in's CA in-process (google-gax gives
// each REST call its own https.Agent, Storage takes none), so this file re-runs itself as a child
// process with the stand-in's `env` (NODE_EXTRA_CA_CERTS, and HTTPS_PROXY for the token hosts the
// SDKs hard-wire) and KILN_GCE_SDK_STEP naming what to do; the step's result comes back as JSON.

interface StepInput { url: string; credentialsFile: string; project: string; bucket: string; args: Record<string, string> }
/** An SDK error as Kiln sees it: the HTTP status and, when the body is Google's JSON error, its status, reason and message. */
interface Refusal { code?: number | string; status?: number; message: string; googleStatus?: string; reason?: string }

// The clients exactly as Kiln points them at the stand-in. Compute is loaded only where needed (its API description takes ~1.5 s to load).
async function storageClient(input: StepInput): Promise<Storage> {
  const { Storage: StorageClient } = await import('@google-cloud/storage');
  return new StorageClient({ projectId: input.project, apiEndpoint: input.url, useAuthWithCustomEndpoint: true, keyFilename: input.credentialsFile });
}

async function computeClients(input: StepInput) {
  const { ImagesClient, GlobalOperationsClient } = await import('@google-cloud/compute');
  const port = Number(new URL(input.url).port);
  const keyFilename = input.credentialsFile;
  return {
    images: new ImagesClient({ apiEndpoint: '127.0.0.1', port, keyFilename, fallback: true }),
    operations: new GlobalOperationsClient({ apiEndpoint: '127.0.0.1', port, keyFilename, fallback: true }),
  };
}

async function refusal(fn: () => Promise<unknown>): Promise<Refusal> {
  try { await fn(); } catch (e) {
    const err = e as Error & { code?: number | string; status?: number; response?: { status?: number; data?: unknown } };
    const status = err.status ?? err.response?.status;
    // google-gax 5 over REST lets gaxios reject a non-2xx answer, so Compute errors arrive as a GaxiosError whose message is the JSON body.
    let body: { error?: { message?: string; status?: string; errors?: { reason?: string }[] } } | undefined;
    try { body = JSON.parse(err.message) as typeof body; } catch { body = err.response?.data as typeof body; }
    const google = body?.error;
    return {
      message: google?.message ?? err.message,
      ...(err.code !== undefined ? { code: err.code } : {}), ...(status !== undefined ? { status } : {}),
      ...(google?.status ? { googleStatus: google.status } : {}), ...(google?.errors?.[0]?.reason ? { reason: google.errors[0].reason } : {}),
    };
  }
  throw new Error('expected a refusal');
}

function writeStream(file: File, path: string, options: Parameters<File['createWriteStream']>[0]): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = file.createWriteStream(options);
    out.on('error', reject);
    out.on('finish', () => resolve());
    createReadStream(path).pipe(out);
  });
}

/**
 * A resumable upload as Kiln must make it against a custom endpoint: createWriteStream() alone
 * sends no Authorization there (Storage 7.22 drops useAuthWithCustomEndpoint on that path), so
 * the session is started with createResumableUpload() and its URI, itself the credential,
 * carries the bytes.
 */
async function upload(storage: Storage, bucket: string, name: string, path: string, metadata: Record<string, string> = {}): Promise<File> {
  const file = storage.bucket(bucket).file(name);
  const objectMetadata = { contentType: 'application/gzip', metadata };
  const [uri] = await file.createResumableUpload({ metadata: objectMetadata, preconditionOpts: { ifGenerationMatch: 0 } });
  await writeStream(file, path, { uri, resumable: true, chunkSize: CHUNK, metadata: objectMetadata });
  return file;
}

const STEPS: Record<string, (input: StepInput) => Promise<unknown>> = {
  async upload({ args, ...input }) {
    const storage = await storageClient({ args, ...input });
    const bucket = storage.bucket(input.bucket);
    const withoutUri = await refusal(() => writeStream(bucket.file('no-uri.tar.gz'), args['tarball']!, {
      resumable: true, chunkSize: CHUNK, metadata: { contentType: 'application/gzip' }, preconditionOpts: { ifGenerationMatch: 0 },
    }));
    const file = await upload(storage, input.bucket, args['name']!, args['tarball']!, { kiln: 'yes', release: '0.1.0' });
    const second = await refusal(() => upload(storage, input.bucket, args['name']!, args['tarball']!));
    const [read] = await file.getMetadata();
    const [listed] = await bucket.getFiles({ prefix: 'images/' });
    const [bucketMetadata] = await bucket.getMetadata();
    const doomed = await upload(storage, input.bucket, 'scratch/doomed.tar.gz', args['tarball']!);
    const [doomedMetadata] = await doomed.getMetadata();
    const wrongGeneration = await refusal(() => doomed.delete({ ifGenerationMatch: 1 }));
    await doomed.delete({ ifGenerationMatch: doomedMetadata.generation });
    const afterDelete = await refusal(() => doomed.getMetadata());
    return {
      withoutUri, second, afterDelete, wrongGeneration,
      uploaded: file.metadata, read: { size: read.size, md5Hash: read.md5Hash, crc32c: read.crc32c, metadata: read.metadata, contentType: read.contentType },
      listed: listed.map((f) => f.name), bucket: bucketMetadata.name,
    };
  },

  async 'resume-start'({ args, ...input }) {
    const storage = await storageClient({ args, ...input });
    const file = storage.bucket(input.bucket).file(args['name']!);
    const [uri] = await file.createResumableUpload({ metadata: { contentType: 'application/gzip' }, preconditionOpts: { ifGenerationMatch: 0 } });
    const [spareUri] = await storage.bucket(input.bucket).file('spare.tar.gz').createResumableUpload();
    // Stop after the second chunk's answer, as a crash would.
    const answers = await new Promise<number>((resolve) => {
      const source = createReadStream(args['tarball']!);
      const out = file.createWriteStream({ uri, resumable: true, chunkSize: CHUNK });
      let n = 0;
      out.on('response', () => { if (++n === 2) { source.unpipe(out); source.destroy(); out.destroy(); resolve(n); } });
      out.on('error', () => resolve(n));
      source.pipe(out);
    });
    return { uri, spareUri, answers };
  },

  async 'resume-finish'({ args, ...input }) {
    const storage = await storageClient({ args, ...input });
    const file = storage.bucket(input.bucket).file(args['name']!);
    const refused = await refusal(() => writeStream(file, args['tarball']!, { uri: args['uri']!, resumable: true })).catch(() => undefined);
    if (refused) return { refused };
    return { resumed: { size: file.metadata.size, md5Hash: file.metadata.md5Hash, crc32c: file.metadata.crc32c } };
  },

  async compute({ args, ...input }) {
    const storage = await storageClient({ args, ...input });
    const { images, operations } = await computeClients({ args, ...input });
    const project = input.project;
    await upload(storage, input.bucket, 'images/debian.tar.gz', args['tarball']!);
    await upload(storage, input.bucket, 'images/no-disk-raw.tar.gz', args['noDiskRaw']!);
    await upload(storage, input.bucket, 'images/small.tar.gz', args['small']!);
    const source = (object: string): string => `https://storage.googleapis.com/${input.bucket}/${object}`;
    const done = async (operation: string) => {
      const states: string[] = [];
      for (;;) {
        const [op] = await operations.wait({ project, operation });
        states.push(String(op.status));
        if (op.status === 'DONE') return { states, operationType: op.operationType, progress: op.progress, errors: (op.error?.errors ?? []).map((e) => ({ code: e.code, message: e.message })) };
        if (states.length > 10) throw new Error(`operation ${operation} never DONE: ${states.join(' ')}`);
      }
    };
    const get = async (image: string) => (await images.get({ project, image }))[0];

    const v1 = {
      name: 'kiln-debian-12-v1', family: 'kiln-debian-12', description: 'Kiln test image', labels: { kiln: 'yes', version: 'v1' },
      guestOsFeatures: [{ type: 'UEFI_COMPATIBLE' }, { type: 'GVNIC' }], architecture: 'X86_64', storageLocations: ['eu'],
      rawDisk: { source: source('images/debian.tar.gz'), containerType: 'TAR' },
    };
    const requestId = randomUUID();
    const [inserted] = await images.insert({ project, imageResource: v1, requestId });
    const pending = (await get(v1.name)).status;
    const [replayed] = await images.insert({ project, imageResource: v1, requestId });
    // The SDK names the operation by its numeric id; Compute accepts that as well as its name.
    const insertDone = await done(String(inserted.name));
    const ready = await get(v1.name);

    const duplicate = await refusal(() => images.insert({ project, imageResource: v1 }));
    const badLabel = await refusal(() => images.insert({ project, imageResource: { ...v1, name: 'kiln-bad-label', labels: { kiln: 'Yes!' } } }));
    const badName = await refusal(() => images.insert({ project, imageResource: { ...v1, name: 'Kiln_Debian' } }));
    const badFeature = await refusal(() => images.insert({ project, imageResource: { ...v1, name: 'kiln-bad-feature', guestOsFeatures: [{ type: 'UEFI' }] } }));
    const missingObject = await refusal(() => images.insert({ project, imageResource: { ...v1, name: 'kiln-missing', rawDisk: { source: source('images/nope.tar.gz') } } }));
    const gsSource = await refusal(() => images.insert({ project, imageResource: { ...v1, name: 'kiln-gs', rawDisk: { source: `gs://${input.bucket}/images/debian.tar.gz` } } }));

    const [noDisk] = await images.insert({ project, imageResource: { name: 'kiln-no-disk-raw', rawDisk: { source: source('images/no-disk-raw.tar.gz') } } });
    const noDiskDone = await done(String(noDisk.latestResponse.name));
    const [small] = await images.insert({ project, imageResource: { name: 'kiln-small', rawDisk: { source: source('images/small.tar.gz') } } });
    const smallDone = await done(String(small.latestResponse.name));

    const v2 = { ...v1, name: 'kiln-debian-12-v2', labels: { kiln: 'yes', version: 'v2' } };
    const [insertedV2] = await images.insert({ project, imageResource: v2 });
    await done(String(insertedV2.latestResponse.name));
    const familyBefore = (await images.getFromFamily({ project, family: v1.family }))[0].name;
    const names = async (filter: string, maxResults?: number) =>
      (await images.list({ project, filter, ...(maxResults ? { maxResults } : {}) }))[0].map((i) => i.name);
    const lists = {
      quotedLabel: await names('labels.version="v1"'),
      bareLabels: await names('(labels.kiln = yes) (family = kiln-debian-12)', 1),
      byName: await names('name=kiln-no-disk-raw'),
      failed: await names('status = FAILED'),
    };

    const [deprecated] = await images.deprecate({ project, image: v2.name, deprecationStatusResource: { state: 'DEPRECATED', replacement: String(ready.selfLink) } });
    const deprecateDone = await done(String(deprecated.latestResponse.name));
    const v2After = (await get(v2.name)).deprecated;
    const familyAfterDeprecate = (await images.getFromFamily({ project, family: v1.family }))[0].name;
    const badReplacement = await refusal(() => images.deprecate({ project, image: v2.name, deprecationStatusResource: { state: 'OBSOLETE', replacement: 'global/images/nope' } }));
    const badState = await refusal(() => images.deprecate({ project, image: v2.name, deprecationStatusResource: { state: 'RETIRED' } }));

    const [deleted] = await images.delete({ project, image: v1.name });
    const deleting = (await get(v1.name)).status;
    const deleteDone = await done(String(deleted.latestResponse.name));
    const afterDelete = await refusal(() => get(v1.name));
    const familyAfterDelete = await refusal(() => images.getFromFamily({ project, family: v1.family }));
    const otherProject = await refusal(() => images.get({ project: 'someone-else', image: v2.name }));

    // The SDK types latestResponse as a google.longrunning.Operation; Compute's REST answer is a compute Operation.
    const first = inserted.latestResponse as protos.google.cloud.compute.v1.IOperation;
    return {
      inserted: { status: first.status, operationType: first.operationType, user: first.user, targetLink: first.targetLink, name: first.name },
      replayed: replayed.latestResponse.name, pending, insertDone,
      ready: {
        status: ready.status, family: ready.family, labels: ready.labels, guestOsFeatures: (ready.guestOsFeatures ?? []).map((f) => f.type),
        architecture: ready.architecture, diskSizeGb: ready.diskSizeGb, archiveSizeBytes: ready.archiveSizeBytes, storageLocations: ready.storageLocations,
        rawDisk: { source: ready.rawDisk?.source, containerType: ready.rawDisk?.containerType }, selfLink: ready.selfLink, description: ready.description,
      },
      duplicate, badLabel, badName, badFeature, missingObject, gsSource,
      noDiskDone, noDiskStatus: (await get('kiln-no-disk-raw')).status, smallDone,
      familyBefore, lists, deprecateDone, v2After, familyAfterDeprecate, badReplacement, badState,
      deleting, deleteDone, afterDelete, familyAfterDelete, otherProject,
    };
  },

  async 'insert-and-wait'({ args, ...input }) {
    const storage = await storageClient({ args, ...input });
    const { images, operations } = await computeClients({ args, ...input });
    await upload(storage, input.bucket, 'images/debian.tar.gz', args['tarball']!);
    const [op] = await images.insert({ project: input.project, imageResource: { name: args['image']!, rawDisk: { source: `https://storage.googleapis.com/${input.bucket}/images/debian.tar.gz` } } });
    for (;;) {
      const [now] = await operations.get({ project: input.project, operation: String(op.latestResponse.name) });
      if (now.status === 'DONE') {
        return { errors: (now.error?.errors ?? []).map((e) => ({ code: e.code, message: e.message })), httpErrorStatusCode: now.httpErrorStatusCode, image: (await images.get({ project: input.project, image: args['image']! }))[0].status };
      }
    }
  },
};

/** Runs one SDK step in a child process (this file) trusting the stand-in; returns its result. */
async function sdk<T>(s: GceStandin, dir: string, step: keyof typeof STEPS, args: Record<string, string>): Promise<T> {
  const input: StepInput = { url: s.url, credentialsFile: s.credentialsFile, project: s.project, bucket: BUCKET, args };
  const env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir, ...s.env, KILN_GCE_SDK_STEP: step, KILN_GCE_SDK_INPUT: JSON.stringify(input) };
  const { stdout } = await promisify(execFile)(process.execPath, [fileURLToPath(import.meta.url)], { env, timeout: 25_000, maxBuffer: 16 * 1024 * 1024 });
  const out = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { result?: T; error?: string };
  if (out.error !== undefined) throw new Error(`SDK step ${step} failed in the child: ${out.error}`);
  return out.result as T;
}

async function runStep(step: string): Promise<void> {
  let out: { result?: unknown; error?: string };
  try {
    const run = STEPS[step];
    if (!run) throw new Error(`no SDK step ${step}`);
    out = { result: await run(JSON.parse(process.env['KILN_GCE_SDK_INPUT'] ?? '{}') as StepInput) };
  } catch (e) {
    out = { error: e instanceof Error ? e.stack ?? e.message : String(e) };
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

// =============================================================================================
// The tests

interface Fixture { dir: string; tarball: string; diskSha256: Promise<string>; noDiskRaw: string; small: string }
let fixture: Fixture;

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** A sparse disk: `size` bytes with random data at a few places. */
async function sparseDisk(path: string, size: number, writes: [number, number][]): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.truncate(size);
    for (const [at, length] of writes) await handle.write(randomBytes(length), 0, length, at);
  } finally { await handle.close(); }
}

async function withStandin(fn: (s: GceStandin, dir: string) => Promise<void>, pollsBeforeDone?: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-gcest-'));
  const s = await startGceStandin({ dir, project: PROJECT, buckets: [BUCKET], ...(pollsBeforeDone !== undefined ? { pollsBeforeDone } : {}) });
  try { await fn(s, dir); } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface RawResponse { status: number; headers: Record<string, string | string[] | undefined>; text: string; json: { error?: { code?: number; message?: string; status?: string; errors?: { reason?: string }[] }; error_description?: string; access_token?: string; [k: string]: unknown } }

/** A bare HTTPS request trusting the stand-in's CA (in-process: https.request takes `ca`). */
function raw(s: GceStandin, method: string, path: string, headers: Record<string, string> = {}, body?: string | Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const options: RequestOptions = { method, ca: readFileSync(s.caFile), headers: { ...headers, ...(body !== undefined ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}) } };
    const req = request(`${s.url}${path}`, options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: RawResponse['json'] = {};
        try { json = JSON.parse(text) as RawResponse['json']; } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The status a CONNECT through the stand-in (as HTTPS_PROXY) gets. */
function connect(s: GceStandin, target: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(s.url, { method: 'CONNECT', path: target, ca: readFileSync(s.caFile) });
    req.on('connect', (res, socket) => { socket.destroy(); resolve(res.statusCode ?? 0); });
    req.on('error', reject);
    req.end();
  });
}

interface ServiceAccountKey { type: string; project_id: string; private_key_id: string; private_key: string; client_email: string; client_id: string; token_uri: string; universe_domain: string }
const keyOf = (s: GceStandin): ServiceAccountKey => JSON.parse(readFileSync(s.credentialsFile, 'utf8')) as ServiceAccountKey;

function assertion(key: ServiceAccountKey, claims: Record<string, unknown> = {}, signWith = key.private_key): string {
  const iat = Math.floor(Date.now() / 1000);
  return signJwt({ iss: key.client_email, scope: SCOPE_CLOUD, aud: 'https://oauth2.googleapis.com/token', iat, exp: iat + 3600, ...claims }, signWith, key.private_key_id);
}

function tokenRequest(s: GceStandin, form: Record<string, string>): Promise<RawResponse> {
  return raw(s, 'POST', '/token', { 'Content-Type': 'application/x-www-form-urlencoded' }, new URLSearchParams(form).toString());
}

async function accessToken(s: GceStandin): Promise<string> {
  const res = await tokenRequest(s, { grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: assertion(keyOf(s)) });
  assert.equal(res.status, 200, res.text);
  return String(res.json.access_token);
}

function defineTests(): void {
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-gcest-fixture-'));
    const disk = join(dir, 'disk.raw');
    await sparseDisk(disk, GIB, [[64 * 1024 * 1024, 1_300_000], [GIB - 4096, 4096]]);
    const tarball = join(dir, 'debian.tar.gz');
    // Kiln's own GCE format (oldgnu, sparse, only disk.raw); holes found by seeking, not by reading the GiB as writeGceTarball does.
    const gceTar = (folder: string, out: string): Promise<unknown> => exec('tar', ['--format=oldgnu', '--sparse', '-czf', out, '-C', folder, 'disk.raw']);
    await gceTar(dir, tarball);
    await mkdir(join(dir, 'wrong'));
    await writeFile(join(dir, 'wrong', 'image.raw'), randomBytes(4096));
    const noDiskRaw = join(dir, 'no-disk-raw.tar.gz');
    await exec('tar', ['--format=oldgnu', '-czf', noDiskRaw, '-C', join(dir, 'wrong'), 'image.raw']);
    const smallDisk = join(dir, 'small', 'disk.raw');
    await mkdir(join(dir, 'small'));
    await sparseDisk(smallDisk, 3 * 1024 * 1024, [[0, 4096]]);
    const small = join(dir, 'small.tar.gz');
    await gceTar(join(dir, 'small'), small);
    // Hashing the GiB takes a second or more: it runs while the first tests do.
    const diskSha256 = sha256File(disk);
    diskSha256.catch(() => undefined);
    fixture = { dir, tarball, diskSha256, noDiskRaw, small };
  });
  after(() => { if (fixture) rmSync(fixture.dir, { recursive: true, force: true }); });

  test('the key file is a Google service-account key made at start, mode 0600; the token endpoint speaks the JWT-bearer grant as Google does', async () => {
    await withStandin(async (s) => {
      const key = keyOf(s);
      assert.equal(statSync(s.credentialsFile).mode & 0o777, 0o600);
      assert.equal(key.type, 'service_account');
      assert.equal(key.project_id, PROJECT);
      assert.equal(key.client_email, s.clientEmail);
      assert.equal(key.token_uri, `${s.url}/token`);
      assert.equal(key.universe_domain, 'googleapis.com');
      assert.match(key.private_key, /^-----BEGIN PRIVATE KEY-----\n/);
      assert.match(key.private_key_id, /^[0-9a-f]{40}$/);
      assert.ok(s.secrets().includes(key.private_key));

      const grant = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
      const ok = await tokenRequest(s, { grant_type: grant, assertion: assertion(key) });
      assert.equal(ok.status, 200);
      assert.equal(ok.json['token_type'], 'Bearer');
      assert.equal(ok.json['expires_in'], 3599);
      assert.ok(s.secrets().includes(String(ok.json.access_token)), 'issued tokens are secrets');
      // The hosts the SDKs hard-wire are audiences too.
      assert.equal((await tokenRequest(s, { grant_type: grant, assertion: assertion(key, { aud: `${s.url}/token` }) })).status, 200);

      const forgedKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      const refusals: [Record<string, string>, number, string, RegExp][] = [
        [{ grant_type: grant, assertion: assertion(key, {}, forgedKey) }, 400, 'invalid_grant', /^Invalid JWT Signature\.$/],
        [{ grant_type: grant, assertion: assertion(key, { iss: 'someone@else.iam.gserviceaccount.com' }) }, 400, 'invalid_grant', /account not found/],
        [{ grant_type: grant, assertion: assertion(key, { exp: Math.floor(Date.now() / 1000) + 7200 }) }, 400, 'invalid_grant', /short-lived token \(60 minutes\)/],
        [{ grant_type: grant, assertion: assertion(key, { iat: 1_600_000_000, exp: 1_600_003_600 }) }, 400, 'invalid_grant', /short-lived token/],
        [{ grant_type: grant, assertion: assertion(key, { aud: 'https://example.com/token' }) }, 400, 'invalid_grant', /audience/],
        [{ grant_type: grant, assertion: assertion(key, { scope: undefined }) }, 400, 'invalid_scope', /Invalid OAuth scope/],
        [{ grant_type: grant, assertion: assertion(key, { sub: 'admin@example.com' }) }, 401, 'unauthorized_client', /unauthorized/],
        [{ grant_type: 'client_credentials' }, 400, 'unsupported_grant_type', /Invalid grant_type/],
        [{ grant_type: grant }, 400, 'invalid_request', /assertion/],
      ];
      for (const [form, status, error, message] of refusals) {
        const res = await tokenRequest(s, form);
        assert.deepEqual([res.status, res.json['error']], [status, error], JSON.stringify(form).slice(0, 120));
        assert.match(String(res.json.error_description), message);
      }
    });
  });

  test('Storage: a resumable upload in 256 KiB chunks stores the object with GCS hashes; ifGenerationMatch=0 refuses a second one; list, read, delete', async () => {
    await withStandin(async (s, dir) => {
      const name = 'images/kiln-0.1.0.tar.gz';
      const out = await sdk<{
        withoutUri: Refusal; second: Refusal; afterDelete: Refusal; wrongGeneration: Refusal; listed: string[]; bucket: string;
        uploaded: { size: number | string; md5Hash: string; crc32c: string; generation: string };
        read: { size: string; md5Hash: string; crc32c: string; metadata: Record<string, string>; contentType: string };
      }>(s, dir, 'upload', { tarball: fixture.tarball, name });

      // createWriteStream without a session URI sends no Authorization to a custom endpoint (Storage 7.22): GCS would refuse it too.
      assert.equal(out.withoutUri.status ?? out.withoutUri.code, 401, out.withoutUri.message);
      assert.ok(s.rejected.some((r) => r.status === 401 && r.reason === 'required' && r.path.includes('no-uri.tar.gz')));

      const bytes = readFileSync(fixture.tarball);
      const crc = Buffer.alloc(4);
      crc.writeUInt32BE(crc32c(bytes));
      const expected = { size: String(bytes.length), md5Hash: createHash('md5').update(bytes).digest('base64'), crc32c: crc.toString('base64') };
      assert.deepEqual({ size: out.read.size, md5Hash: out.read.md5Hash, crc32c: out.read.crc32c }, expected);
      assert.deepEqual(out.read.metadata, { kiln: 'yes', release: '0.1.0' });
      assert.equal(out.read.contentType, 'application/gzip');
      assert.equal(out.uploaded.md5Hash, expected.md5Hash, "the SDK accepted the stand-in's hashes");
      const stored = s.objects().find((o) => o.name === name);
      assert.ok(stored);
      assert.equal(stored.size, bytes.length);
      assert.equal(stored.crc32c, expected.crc32c);
      assert.equal(createHash('sha256').update(readFileSync(stored.file)).digest('hex'), createHash('sha256').update(bytes).digest('hex'));

      assert.equal(out.second.status ?? out.second.code, 412, out.second.message);
      assert.ok(s.rejected.some((r) => r.status === 412 && r.reason === 'conditionNotMet'));
      assert.deepEqual(out.listed, [name]);
      assert.equal(out.bucket, BUCKET);
      assert.equal(out.wrongGeneration.code, 412);
      assert.equal(out.afterDelete.code, 404);
      assert.match(out.afterDelete.message, /No such object: kiln-images\/scratch\/doomed\.tar\.gz/);
      assert.deepEqual(s.objects().map((o) => o.name), [name]);

      // The wire: one session per upload, chunks of 256 KiB answered 308, the last 200; the token came through the tunnel.
      const session = s.uploadSessions().find((u) => u.name === name && u.state === 'complete');
      assert.ok(session);
      const puts = s.requests.filter((r) => r.method === 'PUT' && r.path === session.uri.slice(s.url.length));
      // Given a session URI, the SDK first asks for the offset (bytes */*: 308, no Range), then sends the chunks.
      assert.deepEqual(puts.map((r) => r.status), [308, ...Array<number>(Math.ceil(bytes.length / CHUNK) - 1).fill(308), 200]);
      assert.ok(s.requests.some((r) => r.method === 'CONNECT' && r.path === 'www.googleapis.com:443' && r.status === 200), 'Storage asks www.googleapis.com for its token');
      assert.ok(s.requests.some((r) => r.method === 'POST' && r.path === '/oauth2/v4/token' && r.status === 200));
    });
  });

  test('Storage: an interrupted upload resumes from the offset the stand-in reports and completes with the same bytes; an expired session answers 404', async () => {
    await withStandin(async (s, dir) => {
      const name = 'images/resumed.tar.gz';
      const bytes = readFileSync(fixture.tarball);
      const started = await sdk<{ uri: string; spareUri: string; answers: number }>(s, dir, 'resume-start', { tarball: fixture.tarball, name });
      assert.equal(started.answers, 2);
      // A status query waits for any request still in flight on the session, then reports what was kept.
      const query = await raw(s, 'PUT', started.uri.slice(s.url.length), { 'Content-Range': 'bytes */*' }, '');
      assert.equal(query.status, 308);
      const kept = s.uploadSessions().find((u) => u.uri === started.uri);
      assert.ok(kept);
      assert.equal(kept.state, 'open');
      assert.ok(kept.received >= 2 * CHUNK && kept.received % CHUNK === 0 && kept.received < bytes.length, `kept ${kept.received}`);
      assert.equal(query.headers['range'], `bytes=0-${kept.received - 1}`);
      assert.deepEqual(s.objects(), [], 'nothing is stored before the upload completes');

      // A new process resumes with createWriteStream({ uri }): it asks for the offset, then sends the rest in one body.
      const resumed = await sdk<{ resumed?: { size: string; md5Hash: string; crc32c: string }; refused?: Refusal }>(s, dir, 'resume-finish', { tarball: fixture.tarball, name, uri: started.uri });
      assert.equal(resumed.refused, undefined, resumed.refused?.message);
      assert.equal(String(resumed.resumed?.size), String(bytes.length));
      assert.equal(resumed.resumed?.md5Hash, createHash('md5').update(bytes).digest('base64'));
      const stored = s.objects().find((o) => o.name === name);
      assert.ok(stored);
      assert.ok(readFileSync(stored.file).equals(bytes), 'the resumed object has the same bytes');
      const sessionPath = started.uri.slice(s.url.length);
      assert.deepEqual(s.requests.filter((r) => r.method === 'PUT' && r.path === sessionPath).slice(-2).map((r) => r.status), [308, 200]);

      // expireSessions() ends every open session (here the spare one); the SDK then fails with GCS's 404.
      s.expireSessions();
      assert.deepEqual(s.uploadSessions().map((u) => [u.name, u.state]), [[name, 'complete'], ['spare.tar.gz', 'expired']]);
      const spare = await sdk<{ resumed?: unknown; refused?: Refusal }>(s, dir, 'resume-finish', { tarball: fixture.tarball, name: 'spare.tar.gz', uri: started.spareUri });
      assert.equal(spare.refused?.status ?? spare.refused?.code, 404, JSON.stringify(spare));
      assert.ok(s.rejected.some((r) => r.status === 404 && r.path === started.spareUri.slice(s.url.length)));
    });
  });

  test('Storage on the wire: an offset gap is 503 text/plain, only whole 256 KiB units of a chunk are kept, overlaps are dropped, a status query and the final chunk complete it', async () => {
    await withStandin(async (s) => {
      const token = await accessToken(s);
      const auth = { Authorization: `Bearer ${token}` };
      const start = await raw(s, 'POST', `/upload/storage/v1/b/${BUCKET}/o?uploadType=resumable&name=wire.bin`, { ...auth, 'Content-Type': 'application/json', 'X-Upload-Content-Type': 'application/octet-stream' }, '{"metadata":{"kind":"wire"}}');
      assert.equal(start.status, 200);
      const location = String(start.headers['location']);
      assert.match(location, new RegExp(`^${s.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/upload/storage/v1/b/${BUCKET}/o\\?uploadType=resumable&name=wire\\.bin&upload_id=`));
      const session = location.slice(s.url.length);
      const data = randomBytes(2 * CHUNK + 12);

      const gap = await raw(s, 'PUT', session, { 'Content-Range': `bytes ${CHUNK}-${2 * CHUNK - 1}/*` }, data.subarray(CHUNK, 2 * CHUNK));
      assert.equal(gap.status, 503);
      assert.equal(gap.headers['content-type'], 'text/plain; charset=utf-8');
      assert.equal(gap.text, `Invalid request.  According to the Content-Range header, the upload offset is ${CHUNK} byte(s), which exceeds already uploaded size of 0 byte(s).`);

      const nothing = await raw(s, 'PUT', session, { 'Content-Range': 'bytes */*' }, '');
      assert.deepEqual([nothing.status, nothing.headers['range']], [308, undefined], 'no Range header while nothing is kept');
      const ragged = await raw(s, 'PUT', session, { 'Content-Range': `bytes 0-${CHUNK + 99}/*` }, data.subarray(0, CHUNK + 100));
      assert.deepEqual([ragged.status, ragged.headers['range']], [308, `bytes=0-${CHUNK - 1}`]);
      const overlap = await raw(s, 'PUT', session, { 'Content-Range': `bytes 0-${2 * CHUNK - 1}/*` }, data.subarray(0, 2 * CHUNK));
      assert.deepEqual([overlap.status, overlap.headers['range']], [308, `bytes=0-${2 * CHUNK - 1}`]);
      const short = await raw(s, 'PUT', session, { 'Content-Range': `bytes ${2 * CHUNK}-${2 * CHUNK + 11}/${data.length}` }, data.subarray(2 * CHUNK, 2 * CHUNK + 5));
      assert.equal(short.status, 400, 'the body must be as long as the range');
      const last = await raw(s, 'PUT', session, { 'Content-Range': `bytes ${2 * CHUNK}-${data.length - 1}/${data.length}` }, data.subarray(2 * CHUNK));
      assert.equal(last.status, 200);
      assert.equal(last.json['kind'], 'storage#object');
      assert.equal(last.json['size'], String(data.length));
      assert.equal(last.json['md5Hash'], createHash('md5').update(data).digest('base64'));
      assert.deepEqual(last.json['metadata'], { kind: 'wire' });
      const again = await raw(s, 'PUT', session, { 'Content-Range': `bytes */${data.length}` }, '');
      assert.deepEqual([again.status, again.json['generation']], [200, last.json['generation']], 'a completed session answers the object');
      const stored = s.objects().find((o) => o.name === 'wire.bin');
      assert.ok(stored && readFileSync(stored.file).equals(data));

      const unknown = await raw(s, 'PUT', `/upload/storage/v1/b/${BUCKET}/o?uploadType=resumable&upload_id=nope`, { 'Content-Range': 'bytes */*' }, '');
      assert.equal(unknown.status, 404);
      const bucket = await raw(s, 'GET', '/storage/v1/b/no-such-bucket/o/x', auth);
      assert.deepEqual([bucket.status, bucket.json.error?.message], [404, 'The specified bucket does not exist.']);
      assert.equal(bucket.json.error?.status, undefined, 'GCS errors carry no status field');
    });
  });

  test('Compute: images.insert, operations polled to DONE, get, list filters, deprecate, getFromFamily and delete through the SDK; refusals as Google words them', async () => {
    await withStandin(async (s, dir) => {
      type Op = { states: string[]; operationType: string; progress: number; errors: { code: string; message: string }[] };
      const out = await sdk<{
        inserted: { status: string; operationType: string; user: string; targetLink: string; name: string };
        replayed: string; pending: string; insertDone: Op;
        ready: { status: string; family: string; labels: Record<string, string>; guestOsFeatures: string[]; architecture: string; diskSizeGb: string; archiveSizeBytes: string; storageLocations: string[]; rawDisk: { source: string; containerType: string }; selfLink: string; description: string };
        duplicate: Refusal; badLabel: Refusal; badName: Refusal; badFeature: Refusal; missingObject: Refusal; gsSource: Refusal;
        noDiskDone: Op; noDiskStatus: string; smallDone: Op; familyBefore: string;
        lists: { quotedLabel: string[]; bareLabels: string[]; byName: string[]; failed: string[] };
        deprecateDone: Op; v2After: { state: string; replacement: string }; familyAfterDeprecate: string; badReplacement: Refusal; badState: Refusal;
        deleting: string; deleteDone: Op; afterDelete: Refusal; familyAfterDelete: Refusal; otherProject: Refusal;
      }>(s, dir, 'compute', { tarball: fixture.tarball, noDiskRaw: fixture.noDiskRaw, small: fixture.small });

      const link = (image: string): string => `https://www.googleapis.com/compute/v1/projects/${PROJECT}/global/images/${image}`;
      assert.deepEqual(out.inserted, { status: 'PENDING', operationType: 'insert', user: s.clientEmail, targetLink: link('kiln-debian-12-v1'), name: out.inserted.name });
      assert.match(out.inserted.name, /^operation-\d+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/);
      assert.equal(out.pending, 'PENDING', 'the image is PENDING until its operation is DONE');
      assert.equal(out.replayed, out.inserted.name, 'a repeated requestId answers the original operation');
      assert.deepEqual(out.insertDone, { states: ['RUNNING', 'RUNNING', 'DONE'], operationType: 'insert', progress: 100, errors: [] });
      assert.deepEqual(out.ready, {
        status: 'READY', family: 'kiln-debian-12', labels: { kiln: 'yes', version: 'v1' }, guestOsFeatures: ['UEFI_COMPATIBLE', 'GVNIC'],
        architecture: 'X86_64', diskSizeGb: '1', archiveSizeBytes: String(statSync(fixture.tarball).size), storageLocations: ['eu'],
        rawDisk: { source: `https://storage.googleapis.com/${BUCKET}/images/debian.tar.gz`, containerType: 'TAR' },
        selfLink: link('kiln-debian-12-v1'), description: 'Kiln test image',
      });

      // Errors reach the caller as GaxiosError: HTTP status, and Google's error body (status, reason, message).
      const refused = (r: Refusal): [number | undefined, string | undefined, string | undefined] => [r.status, r.googleStatus, r.reason];
      assert.deepEqual(refused(out.duplicate), [409, 'ALREADY_EXISTS', 'alreadyExists']);
      assert.equal(out.duplicate.message, "The resource 'projects/kiln-test/global/images/kiln-debian-12-v1' already exists");
      assert.deepEqual(refused(out.badLabel), [400, 'INVALID_ARGUMENT', 'invalid']);
      assert.match(out.badLabel.message, /^Invalid value for field 'resource\.labels': ''\. Label value 'Yes!' violates format constraints/);
      assert.deepEqual(refused(out.badName), [400, 'INVALID_ARGUMENT', 'invalid']);
      assert.match(out.badName.message, /^Invalid value for field 'resource\.name': 'Kiln_Debian'\. Must be a match of regex/);
      assert.deepEqual(refused(out.badFeature), [400, 'INVALID_ARGUMENT', 'invalid']);
      assert.match(out.badFeature.message, /resource\.guestOsFeatures\[0\]\.type': 'UEFI'\. Must be one of \[.*UEFI_COMPATIBLE/);
      assert.deepEqual(refused(out.missingObject), [404, 'NOT_FOUND', 'notFound']);
      assert.equal(out.missingObject.message, "The resource 'https://www.googleapis.com/storage/v1/b/kiln-images/o/images%2Fnope.tar.gz' of type 'Google Cloud Storage object' was not found.");
      assert.deepEqual(refused(out.gsSource), [400, 'INVALID_ARGUMENT', 'invalid']);

      assert.deepEqual(out.noDiskDone.errors, [{ code: 'INVALID_IMAGE_TAR', message: "The file inside the tar archive was named 'image.raw'. It should be named 'disk.raw'." }]);
      assert.equal(out.noDiskStatus, 'FAILED');
      assert.equal(out.smallDone.errors[0]?.code, 'INVALID_IMAGE_TAR');
      assert.match(out.smallDone.errors[0]?.message ?? '', /not a whole number of GiB/);

      assert.equal(out.familyBefore, 'kiln-debian-12-v2', 'the family answers its newest image');
      assert.deepEqual(out.lists, {
        quotedLabel: ['kiln-debian-12-v1'], bareLabels: ['kiln-debian-12-v1', 'kiln-debian-12-v2'], byName: ['kiln-no-disk-raw'], failed: ['kiln-no-disk-raw', 'kiln-small'],
      });
      assert.deepEqual(out.deprecateDone.errors, []);
      assert.deepEqual({ state: out.v2After.state, replacement: out.v2After.replacement }, { state: 'DEPRECATED', replacement: link('kiln-debian-12-v1') });
      assert.equal(out.familyAfterDeprecate, 'kiln-debian-12-v1', 'getFromFamily skips the deprecated image');
      assert.deepEqual(refused(out.badReplacement), [400, 'INVALID_ARGUMENT', 'invalid']);
      assert.match(out.badReplacement.message, /The referenced image resource cannot be found/);
      assert.deepEqual(refused(out.badState), [400, 'INVALID_ARGUMENT', 'invalid']);

      assert.equal(out.deleting, 'DELETING');
      assert.equal(out.deleteDone.operationType, 'delete');
      assert.deepEqual(refused(out.afterDelete), [404, 'NOT_FOUND', 'notFound']);
      assert.equal(out.afterDelete.message, "The resource 'projects/kiln-test/global/images/kiln-debian-12-v1' was not found");
      assert.deepEqual(refused(out.familyAfterDelete), [404, 'NOT_FOUND', 'notFound'], 'only a deprecated image is left in the family');
      assert.equal(out.familyAfterDelete.message, "The resource 'projects/kiln-test/global/images/family/kiln-debian-12' was not found");
      assert.deepEqual(refused(out.otherProject), [404, 'NOT_FOUND', 'notFound']);

      // The extracted disk is the original disk.raw, byte for byte.
      const v2 = s.images().find((i) => i.name === 'kiln-debian-12-v2');
      assert.ok(v2);
      assert.deepEqual([v2.status, v2.diskSizeGb, v2.deprecated?.state], ['READY', 1, 'DEPRECATED']);
      assert.equal(await sha256File(v2.diskFile), await fixture.diskSha256);
      assert.deepEqual(s.images().map((i) => [i.name, i.status]), [['kiln-no-disk-raw', 'FAILED'], ['kiln-small', 'FAILED'], ['kiln-debian-12-v2', 'READY']]);

      // The wire: REST with numeric enums, the token from oauth2.googleapis.com through the tunnel.
      const compute = s.requests.filter((r) => r.path.startsWith('/compute/v1/'));
      assert.ok(compute.length > 20);
      assert.ok(compute.every((r) => r.path.includes('$alt=json%3Benum-encoding=int')), 'google-gax asks for numeric enums');
      assert.ok(s.requests.some((r) => r.method === 'CONNECT' && r.path === 'oauth2.googleapis.com:443'));
      assert.ok(s.requests.some((r) => r.method === 'POST' && r.path === '/token' && r.status === 200));
      assert.ok(compute.some((r) => /\/global\/operations\/\d+\/wait\?/.test(r.path)), 'operations polled by numeric id');
    });
  });

  test('Compute: failNextInsert ends the next insert operation DONE with that error and the image FAILED', async () => {
    await withStandin(async (s, dir) => {
      s.failNextInsert('Quota exceeded for images in the stand-in.');
      const out = await sdk<{ errors: { code: string; message: string }[]; httpErrorStatusCode: number; image: string }>(s, dir, 'insert-and-wait', { tarball: fixture.tarball, image: 'kiln-doomed' });
      assert.deepEqual(out, { errors: [{ code: 'IMAGE_CREATION_FAILED', message: 'Quota exceeded for images in the stand-in.' }], httpErrorStatusCode: 400, image: 'FAILED' });
      assert.deepEqual(s.images().map((i) => [i.name, i.status, i.diskFile]), [['kiln-doomed', 'FAILED', '']]);
      // pollsBeforeDone 2: RUNNING, RUNNING, DONE.
      assert.equal(s.requests.filter((r) => r.method === 'GET' && r.path.includes('/global/operations/')).length, 3);
    });
  });

  test('auth and payloads: no token, a forged or foreign JWT, an unknown body field or query parameter, another project are refused; a self-signed JWT is accepted; secrets never reach the logs', async () => {
    await withStandin(async (s) => {
      const key = keyOf(s);
      const images = `/compute/v1/projects/${PROJECT}/global/images`;
      const none = await raw(s, 'GET', images);
      assert.equal(none.status, 401);
      assert.deepEqual([none.json.error?.status, none.json.error?.errors?.[0]?.reason], ['UNAUTHENTICATED', 'required']);
      assert.equal(none.headers['www-authenticate'], 'Bearer realm="https://accounts.google.com/"');
      const noneStorage = await raw(s, 'GET', `/storage/v1/b/${BUCKET}/o/x`);
      assert.equal(noneStorage.status, 401);
      assert.match(String(noneStorage.json.error?.message), /^Anonymous caller does not have storage\.objects\.get access/);

      const iat = Math.floor(Date.now() / 1000);
      const selfSigned = (claims: Record<string, unknown>, signWith = key.private_key, kid = key.private_key_id): string =>
        signJwt({ iss: key.client_email, sub: key.client_email, iat, exp: iat + 3600, ...claims }, signWith, kid);
      const forgedKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      const bearer = (t: string): Record<string, string> => ({ Authorization: `Bearer ${t}` });
      for (const [what, t] of [
        ['a JWT signed by another key', selfSigned({ scope: SCOPE_CLOUD }, forgedKey)],
        ['a JWT without kid', selfSigned({ scope: SCOPE_CLOUD }, key.private_key, '')],
        ['a JWT of another account', selfSigned({ scope: SCOPE_CLOUD, iss: 'x@y.iam.gserviceaccount.com', sub: 'x@y.iam.gserviceaccount.com' })],
        ['an expired JWT', selfSigned({ scope: SCOPE_CLOUD, iat: iat - 7200, exp: iat - 3600 })],
        ['a JWT for another service', selfSigned({ aud: 'https://pubsub.googleapis.com/' })],
        ['a made-up token', 'ya29.not-issued-here'],
      ] as const) {
        const res = await raw(s, 'GET', images, bearer(t));
        assert.deepEqual([res.status, res.json.error?.errors?.[0]?.reason], [401, 'authError'], what);
      }
      assert.equal((await raw(s, 'GET', images, bearer(selfSigned({ scope: SCOPE_CLOUD })))).status, 200, 'a self-signed JWT with scope');
      assert.equal((await raw(s, 'GET', images, bearer(selfSigned({ aud: 'https://compute.googleapis.com/' })))).status, 200, 'a self-signed JWT with the service audience');
      const storageOnly = await tokenRequest(s, { grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: assertion(key, { scope: 'https://www.googleapis.com/auth/devstorage.read_only' }) });
      const scoped = await raw(s, 'GET', images, bearer(String(storageOnly.json.access_token)));
      assert.deepEqual([scoped.status, scoped.json.error?.errors?.[0]?.reason], [403, 'insufficientPermissions']);

      const token = await accessToken(s);
      const insert = (body: unknown, query = ''): Promise<RawResponse> =>
        raw(s, 'POST', `${images}${query}`, { ...bearer(token), 'Content-Type': 'application/json' }, JSON.stringify(body));
      const unknownField = await insert({ name: 'kiln-x', colour: 'blue', rawDisk: { source: `https://storage.googleapis.com/${BUCKET}/x` } });
      assert.equal(unknownField.status, 400);
      assert.equal(unknownField.json.error?.message, 'Invalid JSON payload received. Unknown name "colour" at \'resource\': Cannot find field.');
      assert.equal(unknownField.json.error?.status, 'INVALID_ARGUMENT');
      const nested = await insert({ name: 'kiln-x', rawDisk: { source: `https://storage.googleapis.com/${BUCKET}/x`, format: 'raw' } });
      assert.equal(nested.json.error?.message, 'Invalid JSON payload received. Unknown name "format" at \'resource.raw_disk\': Cannot find field.');
      const wrongType = await insert({ name: 'kiln-x', labels: ['a'] });
      assert.equal(wrongType.status, 400);
      const numericFeature = await insert({ name: 'kiln-x', guestOsFeatures: [{ type: '195865408' }], rawDisk: { source: `https://storage.googleapis.com/${BUCKET}/x` } });
      assert.equal(numericFeature.status, 404, 'a numeric enum value is accepted (the object is what is missing)');
      const unknownQuery = await insert({ name: 'kiln-x' }, '?colour=blue');
      assert.equal(unknownQuery.json.error?.message, 'Invalid JSON payload received. Unknown name "colour": Cannot bind query parameter. Field \'colour\' could not be found in request message.');
      const badRequestId = await insert({ name: 'kiln-x' }, '?requestId=00000000-0000-0000-0000-000000000000');
      assert.equal(badRequestId.status, 400);
      const other = await raw(s, 'GET', '/compute/v1/projects/someone-else/global/images', bearer(token));
      assert.deepEqual([other.status, other.json.error?.message], [404, "The resource 'projects/someone-else' was not found"]);
      const setLabels = await raw(s, 'POST', `${images}/x/setLabels`, { ...bearer(token), 'Content-Type': 'application/json' }, '{}');
      assert.equal(setLabels.status, 501);
      const pageOne = await raw(s, 'GET', `${images}?maxResults=501`, bearer(token));
      assert.equal(pageOne.status, 400);

      // As HTTPS_PROXY the stand-in tunnels Google's token hosts only.
      assert.equal(await connect(s, 'example.com:443'), 403);
      for (const host of GOOGLE_TOKEN_HOSTS) assert.equal(await connect(s, `${host}:443`), 200);

      const logged = JSON.stringify([s.requests, s.rejected]);
      assert.ok(s.secrets().length >= 3);
      for (const secret of s.secrets()) assert.ok(!logged.includes(secret), 'no secret in the request log');
      assert.ok(!logged.includes(key.private_key.split('\n')[1]!), 'not even a line of the private key');
    });
  });
}

const step = process.env['KILN_GCE_SDK_STEP'];
if (step) await runStep(step); else defineTests();
