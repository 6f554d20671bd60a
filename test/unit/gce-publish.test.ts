/**
 * `kiln publish --to gce` and `kiln prune --cloud gce` against the Google Cloud stand-in
 * (test/support/gce-standin.ts: NOT Google; HTTPS with a self-signed certificate). The official SDKs
 * trust that certificate only through NODE_EXTRA_CA_CERTS read at start-up, and send the service
 * account's assertion to Google's token hosts, which the stand-in serves as a proxy: so Kiln's calls
 * run in a child process (this file run again, with KILN_GCE_STEP naming what to do) with the
 * stand-in's environment. The stand-in's records are read here.
 */
import { strict as assert } from 'node:assert';
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import type { Logger } from '../../src/log.js';

interface Step { storeDir: string; base: string; cfg: Record<string, unknown>; rel?: Record<string, unknown>; ref?: string; features?: string[]; prune?: { keep: number; graceDays: number; apply: boolean; now?: string }; object?: { name: string; metadata: Record<string, string>; file: string }; image?: Record<string, unknown> }
interface StepOut { result?: unknown; error?: { message: string; hint?: string; detail?: string }; logs: string[] }

/** The child's side: one step with Kiln's own functions, the result (or KilnError) as JSON on stdout. */
async function runStep(name: string, input: Step): Promise<void> {
  const logs: string[] = [];
  const logger: Logger = { verbose: false, debug() {}, info: (m) => { logs.push(m); }, warn: (m) => { logs.push(`warn: ${m}`); } };
  const out: StepOut = { logs };
  try {
    const { openStore } = await import('../../src/store/index.js');
    const store = await openStore(input.storeDir, input.base);
    const cfg = { object_prefix: 'kiln/', keep_object: false, wait: '2m', ...input.cfg } as import('../../src/template/schema.js').GcePublishConfig;
    if (name === 'publish') {
      const { publishTarballToGce } = await import('../../src/cloud/gce/publish.js');
      out.result = await publishTarballToGce(store, input.rel as never, input.features ?? [], cfg, { logger });
    } else if (name === 'upload') {
      const { uploadTarball } = await import('../../src/cloud/gce/upload.js');
      out.result = await uploadTarball(input.rel as never, { project: cfg.project, bucket: cfg.bucket, prefix: cfg.object_prefix, endpoint: cfg.storage_endpoint }, { logger });
    } else if (name === 'prune') {
      const { pruneGce } = await import('../../src/cloud/gce/prune.js');
      const p = input.prune ?? { keep: 1, graceDays: 7, apply: false };
      out.result = await pruneGce(store, 'web', cfg, { rule: { keep: p.keep, keepDays: 0 }, graceDays: p.graceDays, apply: p.apply, logger, now: p.now ? new Date(p.now) : undefined });
    } else if (name === 'put-object') {
      // Someone else's object where Kiln's would go.
      const { storageClient } = await import('../../src/cloud/gce/upload.js');
      const o = input.object as NonNullable<Step['object']>;
      const file = storageClient({ project: cfg.project, endpoint: cfg.storage_endpoint }).bucket(cfg.bucket).file(o.name);
      const [uri] = await file.createResumableUpload({ metadata: { metadata: o.metadata } });
      const { pipeline } = await import('node:stream/promises');
      const { createReadStream } = await import('node:fs');
      await pipeline(createReadStream(o.file), file.createWriteStream({ uri, resumable: true }));
    } else if (name === 'insert-image') {
      const { computeClients, waitOperation } = await import('../../src/cloud/gce/publish.js');
      const { images, operations } = computeClients(cfg);
      const [op] = await images.insert({ project: cfg.project, imageResource: input.image });
      await waitOperation(operations, cfg.project, op.latestResponse as never, 'insert', Date.now() + 60_000);
      await Promise.all([images.close(), operations.close()]);
    } else if (name === 'resolve') {
      out.result = (await store.resolve(input.ref ?? '', { verifyArtifacts: false })).cloudIds;
    }
  } catch (e) {
    const k = e as { message?: string; hint?: string; detail?: string };
    out.error = { message: k.message ?? String(e), hint: k.hint, detail: k.detail };
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

if (process.env.KILN_GCE_STEP) await runStep(process.env.KILN_GCE_STEP, JSON.parse(process.env.KILN_GCE_INPUT ?? '{}') as Step);

const { startGceStandin } = await import('../support/gce-standin.js');
const { openStore } = await import('../../src/store/index.js');
const { publishFake, scratch } = await import('./store-fixtures.js');
type Standin = Awaited<ReturnType<typeof startGceStandin>>;

const MIB = 1024 * 1024;
let dir: string;
let gce: Standin;
let storeDir: string;
let cfg: Record<string, unknown>;
let tarball: { file: string; sha256: string; size: number; diskSha256: string };
let big: { file: string; sha256: string; size: number };
const rels: Record<string, { name: string; version: string; digest: string; commit: string }> = {};

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** One step in a child process; `killWhen`, polled, SIGKILLs it (a run killed midway). */
async function step(name: string, input: Partial<Step> = {}, killWhen?: () => boolean): Promise<StepOut> {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, KILN_STATE_DIR: join(dir, 'state'), GOOGLE_APPLICATION_CREDENTIALS: gce.credentialsFile, ...gce.env, KILN_GCE_STEP: name, KILN_GCE_INPUT: JSON.stringify({ storeDir, base: dir, cfg, ...input }) };
  const child = execFile(process.execPath, [fileURLToPath(import.meta.url)], { env, timeout: 120_000, maxBuffer: 16 * MIB });
  let stdout = '';
  child.stdout?.on('data', (d: string) => { stdout += d; });
  const poll = killWhen && setInterval(() => { if (killWhen()) child.kill('SIGKILL'); }, 20);
  const signal = await new Promise<NodeJS.Signals | null>((res) => child.on('close', (_code, sig) => res(sig)));
  if (poll) clearInterval(poll);
  if (signal) return { error: { message: `killed: ${signal}` }, logs: [] };
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as StepOut;
}

/**
 * A step killed once the stand-in holds part of the object (at least one 32 MiB chunk). Returns when the
 * stand-in has taken in what was on the wire (its count stays the same for 300 ms).
 */
async function killedMidway(version: string): Promise<StepOut> {
  const held = () => gce.uploadSessions().filter((s) => s.name.includes(version)).reduce((n, s) => n + s.received, 0);
  const out = await step('upload', { cfg: upCfg(), rel: relOf(version, big) }, () => held() >= 32 * MIB);
  for (let last = -1; held() !== last;) { last = held(); await new Promise((res) => setTimeout(res, 300)); }
  return out;
}

/** The upload-only tests put their objects under a prefix of their own. */
const upCfg = () => ({ ...cfg, object_prefix: 'up/' });
const relOf = (version: string, file: { file: string; sha256: string; size: number } = tarball) => ({ ...rels[version], file: file.file, sha256: file.sha256, size: file.size });

before(async () => {
  dir = scratch('kiln-gce-unit-');
  gce = await startGceStandin({ dir: join(dir, 'standin'), pollsBeforeDone: 1 });
  cfg = { project: gce.project, bucket: 'kiln-images', compute_endpoint: gce.url, storage_endpoint: gce.url };
  // A GCE tarball as Compute Engine takes it: a sparse 1 GiB disk.raw with some data, gzip'd oldgnu tar.
  const d = join(dir, 'disk');
  mkdirSync(d);
  const raw = join(d, 'disk.raw');
  writeFileSync(raw, randomBytes(MIB));
  execFileSync('truncate', ['-s', '1G', raw]);
  execFileSync('tar', ['-C', d, '--format=oldgnu', '--sparse', '-czf', join(dir, 'disk.tar.gz'), 'disk.raw']);
  const diskSha256 = createHash('sha256').update(readFileSync(raw)).digest('hex');
  rmSync(raw);
  tarball = { file: join(dir, 'disk.tar.gz'), sha256: sha256(join(dir, 'disk.tar.gz')), size: statSync(join(dir, 'disk.tar.gz')).size, diskSha256 };
  // Something bigger for the upload itself: three 32 MiB chunks.
  writeFileSync(join(dir, 'big.bin'), randomBytes(70 * MIB));
  big = { file: join(dir, 'big.bin'), sha256: sha256(join(dir, 'big.bin')), size: 70 * MIB };
  storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  for (const v of ['release-0.1.0', 'release-0.2.0', 'release-0.3.0', 'release-0-1-0', 'release-0.4.0']) {
    const r = await publishFake(store, dir, 'web', v, { sizes: { gce: 1000 } });
    rels[v] = { name: 'web', version: v, digest: r.digest, commit: 'c'.repeat(40) };
  }
  await store.channelSet('stable', 'web@release-0.1.0');
});
after(async () => {
  await gce?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('publish: the tarball uploaded, an image made from it with family, features, labels and the exact version; the object then deleted; the path recorded', async () => {
  const out = await step('publish', { rel: relOf('release-0.1.0'), features: ['GVNIC', 'UEFI_COMPATIBLE', 'VIRTIO_SCSI_MULTIQUEUE'] });
  assert.equal(out.error, undefined, JSON.stringify(out));
  const p = out.result as { image: string; path: string; existing: boolean; sent: number; object: string };
  assert.equal(p.image, 'web-release-0-1-0');
  assert.equal(p.existing, false);
  assert.equal(p.sent, tarball.size);
  const img = gce.images().find((i) => i.name === 'web-release-0-1-0');
  assert.ok(img);
  assert.equal(img.status, 'READY');
  assert.equal(img.family, 'web');
  assert.deepEqual([...img.guestOsFeatures].sort(), ['GVNIC', 'UEFI_COMPATIBLE', 'VIRTIO_SCSI_MULTIQUEUE']);
  assert.equal(img.labels['image-version'], 'release-0-1-0');
  assert.match(img.description ?? '', new RegExp(`^web@release-0\\.1\\.0 built by Kiln; release ${rels['release-0.1.0'].digest}; `));
  assert.equal(img.architecture, 'X86_64');
  assert.equal(createHash('sha256').update(readFileSync(img.diskFile)).digest('hex'), tarball.diskSha256, 'the image holds the disk the tarball carried');
  assert.deepEqual(gce.objects(), [], 'the tarball is deleted once the image is READY');
  assert.deepEqual(readdirSync(join(dir, 'state', 'uploads')), [], 'no session kept');
  const ids = await step('resolve', { ref: 'web@release-0.1.0' });
  assert.deepEqual(ids.result, { gce: { [gce.project]: `projects/${gce.project}/global/images/web-release-0-1-0` } });
});

test('publish again: the image is found by name and recorded, nothing sent; another release whose version maps to the same name is refused', async () => {
  const sessions = gce.uploadSessions().length;
  const again = await step('publish', { rel: relOf('release-0.1.0'), features: ['GVNIC'] });
  assert.equal(again.error, undefined, JSON.stringify(again));
  assert.equal((again.result as { existing: boolean }).existing, true);
  assert.equal(gce.uploadSessions().length, sessions, 'no upload started');
  // release-0-1-0 and release-0.1.0 are one GCE name: the description's digest tells them apart.
  const clash = await step('publish', { rel: relOf('release-0-1-0'), features: ['GVNIC'] });
  assert.match(clash.error?.message ?? '', /the image projects\/kiln-test\/global\/images\/web-release-0-1-0 exists, made from another release \(web@release-0\.1\.0, sha256:/);
  assert.match(clash.error?.hint ?? '', /image_prefix/);
  assert.equal(gce.uploadSessions().length, sessions);
});

test('upload: stopped midway, resumed from the offset the service reports with the session kept on disk; an expired session is started again', async () => {
  const rel = relOf('release-0.2.0', big);
  const stopped = await killedMidway('release-0.2.0');
  assert.equal(stopped.error?.message, 'killed: SIGKILL', JSON.stringify(stopped));
  const kept = readdirSync(join(dir, 'state', 'uploads'));
  assert.equal(kept.length, 1);
  assert.equal(statSync(join(dir, 'state', 'uploads', kept[0])).mode & 0o777, 0o600, 'the session URI is a credential: owner only');
  const open = gce.uploadSessions().find((s) => s.state === 'open');
  assert.ok(open && open.received > 0 && open.received < big.size, JSON.stringify(gce.uploadSessions()));
  const resumed = await step('upload', { cfg: upCfg(), rel });
  assert.equal(resumed.error, undefined, JSON.stringify(resumed));
  const r = resumed.result as { resumedAt: number; sent: number; object: string };
  assert.equal(r.resumedAt, open.received);
  assert.equal(r.sent, big.size - open.received);
  assert.ok(resumed.logs.some((l) => /resuming the interrupted upload/.test(l)));
  const obj = gce.objects().find((o) => o.name === r.object);
  assert.ok(obj);
  assert.equal(sha256(obj.file), big.sha256, 'the object is the file, byte for byte');
  assert.equal(obj.metadata['kiln-release-digest'], rels['release-0.2.0'].digest);
  assert.deepEqual(readdirSync(join(dir, 'state', 'uploads')), []);

  // An object there already from this release with the file's MD5: reused.
  const reused = await step('upload', { cfg: upCfg(), rel });
  assert.equal((reused.result as { existing: boolean }).existing, true);

  const rel3 = relOf('release-0.3.0', big);
  await killedMidway('release-0.3.0');
  gce.expireSessions();
  const fresh = await step('upload', { cfg: upCfg(), rel: rel3 });
  assert.equal(fresh.error, undefined, JSON.stringify(fresh));
  assert.ok(fresh.logs.some((l) => /session has expired or was cancelled: starting again/.test(l)), fresh.logs.join('\n'));
  assert.equal((fresh.result as { sent: number }).sent, big.size);
});

test('a kept session URI that is not on the storage endpoint is never used (the SDK would send it the token)', async () => {
  const rel = relOf('release-0.4.0', big);
  // Learn the session file's name from a stopped upload, then point it elsewhere.
  await killedMidway('release-0.4.0');
  const [f] = readdirSync(join(dir, 'state', 'uploads'));
  const path = join(dir, 'state', 'uploads', f);
  const s = JSON.parse(readFileSync(path, 'utf8')) as { uri: string };
  writeFileSync(path, JSON.stringify({ ...s, uri: 'https://attacker.example/upload?upload_id=x' }));
  const before = gce.requests.length;
  const out = await step('upload', { cfg: upCfg(), rel });
  assert.equal(out.error, undefined, JSON.stringify(out));
  assert.ok(out.logs.some((l) => /warn: gce: ignoring the kept upload session/.test(l)), out.logs.join('\n'));
  assert.equal((out.result as { sent: number }).sent, big.size, 'started afresh');
  assert.ok(!gce.requests.slice(before).some((q) => q.path.includes('attacker')), 'nothing went to the other host');
});

test('an object of that name that is not this release\'s is never overwritten; bytes that are not the release\'s are deleted, and no image is made', async () => {
  const rel = relOf('release-0.3.0');
  const name = `kiln/web-release-0.3.0-${rel.digest.slice(7, 19)}.tar.gz`;
  const foreign = { ...cfg, object_prefix: 'foreign/' };
  const put = await step('put-object', { cfg: foreign, object: { name: `foreign/web-release-0.3.0-${rel.digest.slice(7, 19)}.tar.gz`, metadata: { owner: 'someone' }, file: tarball.file } });
  assert.equal(put.error, undefined, JSON.stringify(put));
  const refused = await step('publish', { cfg: foreign, rel, features: ['GVNIC'] });
  assert.match(refused.error?.message ?? '', /gs:\/\/kiln-images\/foreign\/web-release-0\.3\.0-[0-9a-f]{12}\.tar\.gz exists, and Kiln did not upload it/);
  assert.equal(gce.objects().find((o) => o.name.startsWith('foreign/'))?.metadata.owner, 'someone', 'untouched');

  // The store's tarball changed after release: its sha256 is not the release's.
  const tampered = await step('publish', { rel: { ...rel, sha256: 'f'.repeat(64) }, features: ['GVNIC'] });
  assert.match(tampered.error?.message ?? '', /does not have the release's sha256/);
  assert.equal(gce.objects().some((o) => o.name === name), false, 'the uploaded object was deleted');
  assert.equal(gce.images().some((i) => i.name === 'web-release-0-3-0'), false);
});

test('an image whose making fails: the operation\'s error is reported, nothing recorded', async () => {
  gce.failNextInsert('INVALID_IMAGE_TAR: the stand-in was told to fail');
  const out = await step('publish', { rel: relOf('release-0.4.0'), features: ['GVNIC'] });
  assert.match(out.error?.message ?? '', /creating the image projects\/kiln-test\/global\/images\/web-release-0-4-0 failed: .*INVALID_IMAGE_TAR/);
  const ids = await step('resolve', { ref: 'web@release-0.4.0' });
  assert.deepEqual(ids.result, {});
});

test('prune: deprecated first (replacement the newest kept), deleted after the grace period; channels and images Kiln did not make are left alone', async () => {
  for (const v of ['release-0.2.0', 'release-0.3.0']) {
    const out = await step('publish', { rel: relOf(v), features: ['GVNIC'] });
    assert.equal(out.error, undefined, JSON.stringify(out));
  }
  // An image labelled like Kiln's but whose description names no release.
  assert.equal((await step('put-object', { object: { name: 'hand/disk.tar.gz', metadata: {}, file: tarball.file } })).error, undefined);
  const hand = await step('insert-image', { image: { name: 'web-by-hand', labels: { 'kiln-image': 'web', 'kiln-digest': 'ab' }, rawDisk: { source: 'https://storage.googleapis.com/kiln-images/hand/disk.tar.gz' } } });
  assert.equal(hand.error, undefined, JSON.stringify(hand));
  const dry = await step('prune', { prune: { keep: 1, graceDays: 7, apply: false } });
  const plan = (dry.result as { image: string; version: string; action: string; step: string; why: string }[]).map((d) => [d.image, d.step, d.why]).sort();
  assert.deepEqual(plan, [
    ['web-release-0-1-0', 'none', 'channel stable'],
    ['web-release-0-2-0', 'deprecate', 'older than the newest 1, on no channel'],
    ['web-release-0-3-0', 'deprecate', 'older than the newest 1, on no channel'],
    ['web-release-0-4-0', 'none', 'among the newest 1'],
  ], 'the hand-made image is not listed');
  assert.ok(gce.images().every((i) => !i.deprecated || i.deprecated.state === 'ACTIVE'), 'a dry run changes nothing');

  const applied = await step('prune', { prune: { keep: 1, graceDays: 7, apply: true } });
  assert.equal(applied.error, undefined, JSON.stringify(applied));
  const dep = gce.images().find((i) => i.name === 'web-release-0-2-0')?.deprecated;
  assert.equal(dep?.state, 'DEPRECATED');
  assert.match(dep?.replacement ?? '', /\/global\/images\/web-release-0-1-0$/, 'the replacement is the newest kept image that is READY (0.4.0 FAILED)');
  assert.equal(gce.images().length, 5, 'nothing deleted within the grace period');

  const early = await step('prune', { prune: { keep: 1, graceDays: 7, apply: true } });
  assert.deepEqual((early.result as { step: string }[]).filter((d) => d.step !== 'none').map((d) => d.step), ['wait', 'wait']);
  const later = await step('prune', { prune: { keep: 1, graceDays: 7, apply: true, now: new Date(Date.now() + 8 * 86_400_000).toISOString() } });
  assert.equal(later.error, undefined, JSON.stringify(later));
  assert.deepEqual(gce.images().map((i) => i.name).sort(), ['web-by-hand', 'web-release-0-1-0', 'web-release-0-4-0']);
  assert.deepEqual((await step('resolve', { ref: 'web@release-0.2.0' })).result, {}, 'the path left the signed metadata');
  assert.ok(existsSync(join(dir, 'store')));
});
