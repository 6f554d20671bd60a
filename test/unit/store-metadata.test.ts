/**
 * Signed release metadata (channels, revocations, cloud ids) against a store writer: one who signs
 * with their own key, replays an older signed document, edits it without the key, or deletes it.
 * Every reader that holds the policy refuses; the trust policy never comes from the store.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadSigner, loadTrustedKey, openStore, type ReleaseStore, type Signer } from '../../src/store/index.js';
import { channelProblems, emptyMetadata, METADATA_TAG } from '../../src/store/metadata.js';
import { canonicalJson, descriptorOf, manifestBytes, MT, parseManifest } from '../../src/store/oci.js';
import { readUserTrust, verifierPolicy } from '../../src/store/policy.js';
import { publishFake, scratch, sshKey } from './store-fixtures.js';

const kiln = fileURLToPath(new URL('../../../bin/kiln.js', import.meta.url));

/** Each reader remembers what it saw in its own state directory. */
function asReader(dir: string, name: string): void {
  const d = join(dir, `state-${name}`);
  mkdirSync(d, { recursive: true });
  process.env.KILN_STATE_DIR = d;
}

async function setup(opts: { ttlDays?: number } = {}) {
  const dir = scratch('kiln-meta-');
  asReader(dir, 'writer');
  const alice = sshKey(dir, 'alice');
  const mallory = sshKey(dir, 'mallory');
  const signer = await loadSigner(alice.priv);
  const storeDir = join(dir, 'store');
  const writer = await openStore(storeDir, dir, { signer: async () => signer, metadataTtlDays: opts.ttlDays });
  const policy = { requireSignature: true, keys: [await loadTrustedKey(alice.pub)] };
  const reader = () => openStore(storeDir, dir, { trust: policy });
  return { dir, alice, mallory, signer, storeDir, writer, reader };
}

async function metadataBytes(store: ReleaseStore, name: string): Promise<Buffer> {
  const m = await store.backend.getManifest(name, METADATA_TAG);
  assert.ok(m, 'the image has metadata');
  return m.bytes;
}

/** What a store writer can do without any key: point the metadata tag at bytes of their choosing. */
async function retag(store: ReleaseStore, name: string, bytes: Buffer): Promise<void> {
  await store.backend.putManifest(name, bytes, MT.manifest);
  await store.backend.updateTag(name, METADATA_TAG, async () => ({ bytes, mediaType: MT.manifest }));
}

test('a store writer who signs the metadata with their own key (channel moved back) is refused by every reader', async () => {
  const s = await setup();
  await publishFake(s.writer, s.dir, 'web', 'release-0.1.0', { signer: s.signer });
  await publishFake(s.writer, s.dir, 'web', 'release-0.2.0', { signer: s.signer });
  await s.writer.channelSet('production', 'web@release-0.2.0');
  asReader(s.dir, 'ops');
  assert.equal((await (await s.reader()).resolve('web@production', { format: 'raw' })).version, 'release-0.2.0');

  asReader(s.dir, 'mallory');
  const malloryStore = await openStore(s.storeDir, s.dir, { signer: () => loadSigner(s.mallory.priv) });
  await malloryStore.channelSet('production', 'web@release-0.1.0', { allowRollback: true });

  asReader(s.dir, 'ops');
  const r = await s.reader();
  await assert.rejects(r.resolve('web@production'), /metadata of web is signed by SHA256:\S+, not a trusted key/);
  await assert.rejects(r.resolve('web@release-0.2.0'), /not a trusted key/, 'nothing of the image is used while its metadata is not trusted');
  assert.equal((await r.verify('web@release-0.2.0')).ok, false);
  assert.deepEqual((await r.list('web')).map((l) => l.status), ['bad-metadata', 'bad-metadata']);
  await assert.rejects(r.channelSet('staging', 'web@release-0.2.0'), /not a trusted key/);
});

test('a channel moves to an older version only with allowRollback, which the signed log records', async () => {
  const s = await setup();
  await publishFake(s.writer, s.dir, 'web', 'release-0.1.0', { signer: s.signer });
  await publishFake(s.writer, s.dir, 'web', 'release-0.10.0', { signer: s.signer });
  await s.writer.channelSet('production', 'web@release-0.10.0');
  await assert.rejects(s.writer.channelSet('production', 'web@release-0.1.0'), /production is at release-0\.10\.0; release-0\.1\.0 is older/);
  const back = await s.writer.channelSet('production', 'web@release-0.1.0', { allowRollback: true });
  assert.equal(back.version, 'release-0.1.0');
  assert.equal(back.log.at(-1)?.allowRollback, true);
  assert.equal(back.log.at(-2)?.allowRollback, undefined);
  asReader(s.dir, 'ops');
  assert.equal((await (await s.reader()).resolve('web@production')).version, 'release-0.1.0');
  // A log with a move back that is not flagged is refused, whoever signed it.
  const meta = emptyMetadata('web');
  meta.channels.production = {
    version: 'release-0.1.0', digest: 'sha256:' + '1'.repeat(64),
    log: [
      { time: 't1', version: 'release-0.10.0', digest: 'sha256:' + '2'.repeat(64), previous: null },
      { time: 't2', version: 'release-0.1.0', digest: 'sha256:' + '1'.repeat(64), previous: { version: 'release-0.10.0', digest: 'sha256:' + '2'.repeat(64) } },
    ],
  };
  assert.deepEqual(channelProblems(meta), ['channel web@production moved back from release-0.10.0 to release-0.1.0 at t2 without --allow-rollback']);
});

test('older signed metadata served again (a dropped revocation, a channel moved back) is refused by a reader that saw newer, and by every reader once expired', async () => {
  const s = await setup({ ttlDays: 3 / 86_400 });
  await publishFake(s.writer, s.dir, 'web', 'release-0.1.0', { signer: s.signer });
  const beforeRevocation = await metadataBytes(s.writer, 'web');
  await s.writer.revoke('web@release-0.1.0', 'CVE-2026-0001 in openssl');
  asReader(s.dir, 'ops');
  await assert.rejects((await s.reader()).resolve('web@release-0.1.0'), /is revoked: CVE-2026-0001/);

  await retag(s.writer, 'web', beforeRevocation);
  await assert.rejects((await s.reader()).resolve('web@release-0.1.0'), /seq 1, older than seq 2 seen here .*rollback to stale metadata/);
  // A reader that never saw seq 2 cannot know, until the replayed document expires.
  asReader(s.dir, 'newcomer');
  assert.equal((await (await s.reader()).resolve('web@release-0.1.0')).version, 'release-0.1.0');
  await new Promise((r) => setTimeout(r, 3200));
  asReader(s.dir, 'newcomer-later');
  await assert.rejects((await s.reader()).resolve('web@release-0.1.0'), /expired at .*kiln refresh web/);
  // The writer saw seq 2: it refuses to build on the rolled-back copy rather than fork it.
  asReader(s.dir, 'writer');
  await assert.rejects(s.writer.refresh('web'), /older than seq 2 seen here/);
});

test('metadata edited without the key (a cloud id added, a revocation dropped) does not verify; deleted metadata is missed', async () => {
  const s = await setup();
  await publishFake(s.writer, s.dir, 'web', 'release-0.1.0', { signer: s.signer });
  await s.writer.addCloudIds('web@release-0.1.0', { aws: { 'eu-west-1': 'ami-0aaaaaaaaaaaaaaaa' } });
  asReader(s.dir, 'ops');
  const ok = await (await s.reader()).resolve('web@release-0.1.0');
  assert.deepEqual(ok.cloudIds, { aws: { 'eu-west-1': 'ami-0aaaaaaaaaaaaaaaa' } });
  assert.match(ok.metadataSigner ?? '', /alice@example/);

  const good = await metadataBytes(s.writer, 'web');
  const m = parseManifest(good, 'metadata');
  const doc = JSON.parse((await s.writer.backend.readBlob('web', m.config)).toString('utf8'));
  doc.cloud['release-0.1.0'].ids.aws['us-east-1'] = 'ami-0bbbbbbbbbbbbbbbb';
  doc.seq += 5;
  const config = Buffer.from(canonicalJson(doc));
  await s.writer.backend.putBlob('web', { bytes: config, digest: descriptorOf(MT.metadata, config).digest, size: config.length });
  const forged = manifestBytes({ ...m, config: descriptorOf(MT.metadata, config) });
  await retag(s.writer, 'web', forged);
  for (const reader of ['ops', 'no-policy']) {
    asReader(s.dir, reader);
    const store = reader === 'ops' ? await s.reader() : await openStore(s.storeDir, s.dir);
    await assert.rejects(store.resolve('web@release-0.1.0'), /metadata signature by .* does not verify/, reader);
  }
  // Without the signature layer the edit is unsigned: refused where a signature is required.
  await retag(s.writer, 'web', manifestBytes({ ...m, config: descriptorOf(MT.metadata, config), layers: [] }));
  asReader(s.dir, 'fresh');
  await assert.rejects((await s.reader()).resolve('web@release-0.1.0'), /metadata of web is unsigned, and the trust policy requires a signature/);
  // Deleted (the tag removed from index.json): a reader that saw it knows it is gone.
  const idxPath = join(s.storeDir, 'index.json');
  const idx = JSON.parse(readFileSync(idxPath, 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
  idx.manifests = idx.manifests.filter((x) => x.annotations?.['org.opencontainers.image.ref.name'] !== `web:${METADATA_TAG}`);
  writeFileSync(idxPath, JSON.stringify(idx));
  asReader(s.dir, 'ops');
  await assert.rejects((await s.reader()).resolve('web@release-0.1.0'), /gone from the store .*tampered or rolled back/);
  asReader(s.dir, 'fresh-2');
  await assert.rejects((await s.reader()).resolve('web@release-0.1.0'), /web has no signed metadata/);
});

test('copying metadata: newer wins, the destination keeps a newer one, the same seq with other content is a fork', async () => {
  const s = await setup();
  await publishFake(s.writer, s.dir, 'web', 'v1', { signer: s.signer });
  const mirror = await openStore(join(s.dir, 'mirror'), s.dir);
  assert.deepEqual((await s.writer.copyTo(mirror, 'web@v1')).metadata, { action: 'copied', seq: 1 });
  await s.writer.channelSet('production', 'web@v1');
  assert.deepEqual((await s.writer.copyTo(mirror, 'web@v1')).metadata, { action: 'copied', seq: 2 });
  // The mirror moves on (its own signed change), the origin is behind: the mirror keeps its own.
  const mirrorW = await openStore(join(s.dir, 'mirror'), s.dir, { signer: async () => s.signer });
  await mirrorW.channelSet('staging', 'web@v1');
  assert.deepEqual((await s.writer.copyTo(mirrorW, 'web@v1')).metadata, { action: 'kept-newer', seq: 3 });
  // Both sides change independently from seq 3: two histories.
  asReader(s.dir, 'other-writer');
  await s.writer.refresh('web');
  await s.writer.refresh('web');
  await mirrorW.refresh('web');
  await assert.rejects(s.writer.copyTo(mirrorW, 'web@v1'), /seq 4 in both stores, with different content .*two histories/);
});

test('the policy is the reader\'s: user trust file, flags, the Terraform query; errors name the file and line', async () => {
  const s = await setup();
  await publishFake(s.writer, s.dir, 'web', 'signed', { signer: s.signer });
  const plain = await openStore(s.storeDir, s.dir);
  await publishFake(plain, s.dir, 'web', 'unsigned');
  const conf = join(s.dir, 'conf');
  mkdirSync(join(conf, 'kiln'), { recursive: true });
  const trustFile = join(conf, 'kiln', 'trust.yaml');
  writeFileSync(join(conf, 'kiln', 'alice.pub'), readFileSync(s.alice.pub));
  writeFileSync(trustFile, `require_signature: true\nkeys:\n  - alice.pub\n  - "${readFileSync(s.mallory.pub, 'utf8').trim()}"\n`);
  const user = await readUserTrust(trustFile);
  assert.equal(user?.requireSignature, true);
  assert.deepEqual(user?.keys.map((k) => k.kind), ['ssh', 'ssh']);
  const union = await verifierPolicy({ env: { XDG_CONFIG_HOME: conf }, trustKeys: [s.alice.pub], cwd: s.dir });
  assert.equal(union.requireSignature, true);
  assert.equal(union.keys.length, 2, 'the same key from two sources counts once');
  writeFileSync(trustFile, 'require_signature: yes-please\n');
  await assert.rejects(readUserTrust(trustFile), (e: Error & { where?: { file?: string; line?: number } }) => e.where?.file === trustFile && e.where?.line === 1 && /true or false/.test(e.message));
  writeFileSync(trustFile, 'require_signature: true\nkeyz: []\n');
  await assert.rejects(readUserTrust(trustFile), (e: Error & { where?: { line?: number } }) => e.where?.line === 2 && /unknown setting 'keyz'/.test(e.message));

  // The CLI: with no policy anywhere the unsigned release resolves; the flag, the user's file or the query refuse it.
  const env = { ...process.env, XDG_CONFIG_HOME: join(s.dir, 'empty-conf'), KILN_STATE_DIR: join(s.dir, 'state-cli') };
  const run = (args: string[], input?: string, extra: Record<string, string> = {}) => spawnSync(process.execPath, [kiln, ...args], { cwd: s.dir, input, encoding: 'utf8', env: { ...env, ...extra } });
  assert.equal(run(['resolve', 'web@unsigned', '--store', s.storeDir]).status, 0);
  const flagged = run(['resolve', 'web@unsigned', '--store', s.storeDir, '--require-signature', '--trust-key', s.alice.pub]);
  assert.equal(flagged.status, 1);
  assert.match(flagged.stderr, /refusing web@unsigned: unsigned, and the trust policy requires a signature/);
  const signed = run(['resolve', 'web@signed', '--format', 'raw', '--store', s.storeDir, '--require-signature', '--trust-key', s.alice.pub]);
  assert.equal(signed.status, 0, signed.stderr);
  assert.match(signed.stderr, /signed by SHA256:\S+ alice@example/);
  writeFileSync(trustFile, 'require_signature: true\nkeys: [alice.pub]\n');
  assert.match(run(['resolve', 'web@unsigned', '--store', s.storeDir], undefined, { XDG_CONFIG_HOME: conf }).stderr, /trust policy requires a signature/);
  const q = (extra: Record<string, string>) => run(['resolve', '--terraform'], JSON.stringify({ release: 'web@unsigned', store: s.storeDir, ...extra }));
  assert.equal(q({}).status, 0);
  const tf = q({ require_signature: 'true', trust_keys: s.alice.pub });
  assert.equal(tf.status, 1);
  assert.match(tf.stderr, /unsigned, and the trust policy requires a signature/);
  const tfSigned = run(['resolve', '--terraform'], JSON.stringify({ release: 'web@signed', store: s.storeDir, format: 'raw', require_signature: 'true', trust_keys: s.alice.pub }));
  assert.equal(tfSigned.status, 0, tfSigned.stderr);
  const out = JSON.parse(tfSigned.stdout) as Record<string, string>;
  assert.match(out.signers, /alice@example/);
  assert.match(out.metadata_signer, /alice@example/);
  assert.equal(out.source_verified, 'true');
  assert.match(q({ require_signature: 'yes' }).stderr, /"require_signature" must be "true" or "false"/);
});

test('revocation and channel changes need the key once the metadata is signed', async () => {
  const s = await setup();
  await publishFake(s.writer, s.dir, 'web', 'v1', { signer: s.signer });
  const keyless = await openStore(s.storeDir, s.dir);
  await assert.rejects(keyless.revoke('web@v1', 'oops'), /metadata of web is signed .*changing it needs the signing key/);
  await assert.rejects(keyless.channelSet('production', 'web@v1'), /needs the signing key/);
  const signerless: Signer | undefined = undefined;
  await assert.rejects((await openStore(s.storeDir, s.dir, { signer: async () => signerless })).refresh('web'), /needs the signing key/);
});
