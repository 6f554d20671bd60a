/**
 * Publishing and pruning against the AWS stand-in (test/support/aws-standin.ts: not AWS; a local
 * server that checks every request against botocore's EC2/EBS models from Debian and enforces the
 * calls' rules), with small fake releases so it runs in seconds. The real example release, its boot
 * and Debian's AWS CLI are in test/e2e/aws-publish.test.ts.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { publishToAws, type ReleaseToPublish } from '../../src/cloud/aws/publish.js';
import { pruneAws } from '../../src/cloud/aws/prune.js';
import { KilnError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { openStore } from '../../src/store/index.js';
import type { ReleaseStore } from '../../src/store/release-store.js';
import { startAwsStandIn, type AwsStandIn } from '../support/aws-standin.js';
import { publishFake, scratch } from './store-fixtures.js';

const AKID = 'AKIAKILNUNITTEST0001';
const SECRET = 'unit/StandInSecret+000000000000000000000';
let standin: AwsStandIn;
let dir: string;
const saved: Record<string, string | undefined> = {};
const vars = { AWS_ACCESS_KEY_ID: AKID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_EC2_METADATA_DISABLED: 'true' };

before(async () => {
  dir = scratch('kiln-aws-unit-');
  standin = await startAwsStandIn({ dir: join(dir, 'standin'), accessKeyId: AKID, secretAccessKey: SECRET });
  for (const [k, v] of Object.entries({ ...vars, AWS_ENDPOINT_URL: standin.endpoint })) { saved[k] = process.env[k]; process.env[k] = v; }
});
after(async () => {
  for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  await standin?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function fakeRelease(store: ReleaseStore, name: string, version: string): Promise<ReleaseToPublish> {
  const r = await publishFake(store, dir, name, version, { sizes: { raw: 3 << 20, qcow2: 1 << 20 } });
  const raw = r.artifacts.find((a) => a.format === 'raw');
  assert.ok(raw);
  return { name, version, digest: r.digest, commit: 'a'.repeat(40), rawFile: raw.file, rawSha256: raw.sha256, rawSize: raw.size, architecture: 'x86_64', bootMode: 'uefi-preferred' };
}

const opts = { regions: ['eu-west-1'], logger: silentLogger, pollMs: 10 };

test('three releases published, then kiln prune with keep 1 leaves one AMI and its snapshot, deletes the others\' snapshots, never touches an AMI Kiln did not make; a channel keeps its release', async () => {
  const store = await openStore(join(dir, 'store-a'), dir);
  const rels = [];
  for (const v of ['release-0.1.0', 'release-0.2.0', 'release-0.3.0']) rels.push(await fakeRelease(store, 'web', v));
  const ids: string[] = [];
  for (const rel of rels) ids.push((await publishToAws(store, rel, opts))[0].imageId);
  assert.deepEqual(standin.rejected, []);
  // An AMI of the account that Kiln did not make: prune must never see it.
  const foreign = await standin.addForeignImage({ region: 'eu-west-1', ownerId: standin.accountId, name: 'hand-made', rawFile: rels[0].rawFile });
  assert.equal(standin.images('eu-west-1').length, 4);
  const snapOf = (id: string) => standin.images('eu-west-1').find((i) => i.imageId === id)?.blockDeviceMappings?.[0]?.snapshotId;
  const snaps = ids.map((id) => snapOf(id));
  assert.ok(snaps.every(Boolean));

  const dry = await pruneAws(store, 'web', { regions: ['eu-west-1'], rule: { keep: 1, keepDays: 0 }, apply: false, logger: silentLogger });
  assert.deepEqual(dry.map((d) => [d.version, d.action]).sort(), [['release-0.1.0', 'delete'], ['release-0.2.0', 'delete'], ['release-0.3.0', 'keep']]);
  assert.equal(standin.images('eu-west-1').length, 4, 'a dry run changes nothing');

  const plan = await pruneAws(store, 'web', { regions: ['eu-west-1'], rule: { keep: 1, keepDays: 0 }, apply: true, logger: silentLogger });
  assert.deepEqual(plan.filter((d) => d.action === 'delete').map((d) => d.version).sort(), ['release-0.1.0', 'release-0.2.0']);
  const left = standin.images('eu-west-1').map((i) => i.imageId).sort();
  assert.deepEqual(left, [ids[2], foreign].sort(), 'one AMI of the image is left, and the hand-made one');
  const snapIds = standin.snapshots('eu-west-1').map((s) => s.snapshotId);
  assert.ok(!snapIds.includes(snaps[0] ?? '') && !snapIds.includes(snaps[1] ?? ''), 'the pruned AMIs\' snapshots are deleted');
  assert.ok(snapIds.includes(snaps[2] ?? ''), 'the kept AMI keeps its snapshot');
  // The pruned ids are gone from the signed metadata; the kept one stays.
  assert.deepEqual((await store.resolve('web@release-0.2.0', { verifyArtifacts: false })).cloudIds, {});
  assert.deepEqual((await store.resolve('web@release-0.3.0', { verifyArtifacts: false })).cloudIds, { aws: { 'eu-west-1': ids[2] } });
  // Publish 0.1.0 again, put a channel on it: a prune now keeps it, whatever its age.
  const again = (await publishToAws(store, rels[0], opts))[0].imageId;
  await store.channelSet('stable', 'web@release-0.1.0');
  const kept = await pruneAws(store, 'web', { regions: ['eu-west-1'], rule: { keep: 1, keepDays: 0 }, apply: true, logger: silentLogger });
  assert.deepEqual(kept.map((d) => [d.version, d.action, d.why]).sort(), [['release-0.1.0', 'keep', 'channel stable'], ['release-0.3.0', 'keep', 'among the newest 1']]);
  assert.deepEqual(standin.images('eu-west-1').map((i) => i.imageId).sort(), [again, ids[2], foreign].sort());
  assert.deepEqual(standin.rejected, []);
});

test('an AMI name taken by another release is an error, and nothing is uploaded', async () => {
  const a = await openStore(join(dir, 'store-b1'), dir);
  const b = await openStore(join(dir, 'store-b2'), dir);
  const first = await fakeRelease(a, 'api', 'release-1.0.0');
  await publishToAws(a, first, opts);
  const other = await fakeRelease(b, 'api', 'release-1.0.0');
  assert.notEqual(other.digest, first.digest);
  const puts = standin.requests.filter((q) => q.operation === 'PutSnapshotBlock').length;
  await assert.rejects(publishToAws(b, other, opts), (e: KilnError) => e instanceof KilnError && /AMI name api-release-1\.0\.0 is taken in eu-west-1 by ami-[0-9a-f]+, made from another release \(sha256:/.test(e.message));
  assert.equal(standin.requests.filter((q) => q.operation === 'PutSnapshotBlock').length, puts);
});

test('a disk that does not hash to the release\'s digest is never completed or registered, and its snapshot is deleted', async () => {
  const store = await openStore(join(dir, 'store-c'), dir);
  const rel = await fakeRelease(store, 'db', 'release-2.0.0');
  const images = standin.images('eu-west-2').length;
  await assert.rejects(publishToAws(store, { ...rel, rawSha256: createHash('sha256').update('something else').digest('hex') }, { ...opts, regions: ['eu-west-2'] }),
    (e: KilnError) => /read [0-9a-f]{64}, the release says [0-9a-f]{64}: nothing was registered/.test(e.message));
  assert.equal(standin.images('eu-west-2').length, images);
  assert.equal(standin.snapshots('eu-west-2').length, 0);
  assert.ok(!standin.requests.some((q) => q.region === 'eu-west-2' && q.operation === 'CompleteSnapshot'));
});

test('the snapshot holds the disk: reassembled, it hashes to the raw artifact; boot mode uefi adds TPM 2.0', async () => {
  const store = await openStore(join(dir, 'store-d'), dir);
  const rel = { ...await fakeRelease(store, 'cache', 'release-0.0.1'), bootMode: 'uefi' as const };
  const [p] = await publishToAws(store, rel, { ...opts, regions: ['sa-east-1'] });
  // Boot mode uefi (not uefi-preferred) also turns NitroTPM on; the uefi-preferred AMIs above have none.
  const img = standin.images('sa-east-1')[0];
  assert.equal(img.bootMode, 'uefi');
  assert.equal(img.tpmSupport, 'v2.0');
  assert.equal(standin.images('eu-west-1').find((i) => i.name === 'web-release-0.3.0')?.tpmSupport, undefined);
  const out = join(dir, 'reassembled.raw');
  await standin.reassemble('sa-east-1', p.snapshotId ?? '', out);
  // The volume is whole GiB: the disk, then zeros.
  const got = readFileSync(out);
  assert.equal(got.length, 1024 ** 3);
  assert.equal(createHash('sha256').update(got.subarray(0, rel.rawSize)).digest('hex'), rel.rawSha256);
  assert.ok(got.subarray(rel.rawSize).every((b) => b === 0));
  rmSync(out, { force: true });
});

test('refused credentials name the call, the region and what to do, and the secret is not in the message', async () => {
  const store = await openStore(join(dir, 'store-e'), dir);
  const rel = await fakeRelease(store, 'edge', 'release-0.0.1');
  process.env.AWS_SECRET_ACCESS_KEY = 'wrong/secret';
  try {
    await assert.rejects(publishToAws(store, rel, opts), (e: KilnError) => {
      assert.ok(e instanceof KilnError, String(e));
      assert.match(e.message, /^DescribeImages in eu-west-1 failed: /);
      assert.match(e.hint ?? '', /credentials were refused/);
      assert.ok(!`${e.message}${e.hint}${e.detail}`.includes('wrong/secret'));
      return true;
    });
  } finally {
    process.env.AWS_SECRET_ACCESS_KEY = SECRET;
  }
});
