/**
 * An AMI as source.image, against the AWS stand-in (test/support/aws-standin.ts: not AWS; every
 * request checked against botocore's models from Debian): which AMI is chosen, the owner pin, the
 * kiln.lock pins, and that the copy made to read a foreign AMI is removed. Small synthetic disks; the
 * build on a real AMI that boots is test/e2e/aws-upstream.test.ts.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KilnError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { fetchVerifiedImage, type ImageRequest } from '../../src/source/image.js';
import { startAwsStandIn, type AwsStandIn } from '../support/aws-standin.js';
import { scratch } from './store-fixtures.js';

const VENDOR = '136693071363';
const OTHER = '210987654321';
const AKID = 'AKIAKILNUPSTREAMUNIT';
const SECRET = 'upstream-unit/StandInSecret+0000000000000';
let standin: AwsStandIn;
let dir: string;
let disks: { old: string; newer: string };
let amis: { old: string; newer: string; foreign: string };
const saved: Record<string, string | undefined> = {};
const warnings: string[] = [];
const logger: Logger = { verbose: false, info() {}, debug() {}, warn(m: string) { warnings.push(m); } };

const hashes = new Map<string, { sha256: string; sha512: string }>();
const fileHashes = (f: string) => hashes.get(f) ?? assert.fail(`no hashes of ${f}`);
async function hashOnce(f: string): Promise<void> {
  const a = createHash('sha256');
  const b = createHash('sha512');
  for await (const c of createReadStream(f, { highWaterMark: 4 << 20 })) { a.update(c as Buffer); b.update(c as Buffer); }
  hashes.set(f, { sha256: a.digest('hex'), sha512: b.digest('hex') });
}

before(async () => {
  dir = scratch('kiln-ami-unit-');
  standin = await startAwsStandIn({ dir: join(dir, 'standin'), accessKeyId: AKID, secretAccessKey: SECRET });
  for (const [k, v] of Object.entries({ AWS_ACCESS_KEY_ID: AKID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_ENDPOINT_URL: standin.endpoint, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_EC2_METADATA_DISABLED: 'true' })) { saved[k] = process.env[k]; process.env[k] = v; }
  // Whole GiB, so the volume read back is the file itself: a few non-zero blocks in 1 GiB of holes.
  disks = { old: join(dir, 'old.raw'), newer: join(dir, 'newer.raw') };
  for (const f of Object.values(disks)) {
    writeFileSync(f, '');
    const { truncateSync, openSync, writeSync, closeSync } = await import('node:fs');
    truncateSync(f, 1024 ** 3);
    const fd = openSync(f, 'r+');
    writeSync(fd, randomBytes(4096), 0, 4096, 0);
    writeSync(fd, randomBytes(4096), 0, 4096, 700 * 1024 * 1024);
    closeSync(fd);
    await hashOnce(f);
  }
  const old = await standin.addForeignImage({ region: 'eu-west-1', ownerId: VENDOR, name: 'debian-13-amd64-20261101', rawFile: disks.old });
  await new Promise((res) => setTimeout(res, 20));
  const newer = await standin.addForeignImage({ region: 'eu-west-1', ownerId: VENDOR, name: 'debian-13-amd64-20261115', rawFile: disks.newer });
  await new Promise((res) => setTimeout(res, 20));
  const foreign = await standin.addForeignImage({ region: 'eu-west-1', ownerId: OTHER, name: 'debian-13-amd64-20261130', rawFile: disks.newer });
  amis = { old, newer, foreign };
});
after(async () => {
  for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  await standin?.close();
  rmSync(dir, { recursive: true, force: true });
});

function request(url: string, extra: Partial<ImageRequest> = {}, cache = 'cache-a'): ImageRequest {
  return { config: { url, owner: VENDOR, keys: [], verify: true }, dir, cacheDir: join(dir, cache), logger, ...extra };
}

test('a name pattern picks the pinned owner\'s newest image, never a newer one of another account; the copy made to read it is removed', async () => {
  const img = await fetchVerifiedImage(request('ec2://eu-west-1/debian-13-amd64-*'));
  assert.equal(img.ami?.imageId, amis.newer);
  assert.equal(img.sha256, fileHashes(disks.newer).sha256);
  assert.deepEqual(img.checks, [`owner ${VENDOR} of ${amis.newer} pinned in kiln.yaml`]);
  assert.equal(img.verified, true);
  assert.deepEqual(standin.images('eu-west-1').map((i) => i.imageId).sort(), Object.values(amis).sort(), 'the copy is gone');
  assert.equal(standin.snapshots('eu-west-1').filter((s) => s.ownerId === standin.accountId).length, 0, 'and its snapshot');
  assert.deepEqual(standin.rejected, []);
  // The same AMI again: from the image cache, by its id; nothing copied or read.
  const reads = standin.requests.filter((q) => q.operation === 'GetSnapshotBlock').length;
  const again = await fetchVerifiedImage(request('ec2://eu-west-1/debian-13-amd64-*'));
  assert.equal(again.cached, true);
  assert.equal(standin.requests.filter((q) => q.operation === 'GetSnapshotBlock').length, reads);
});

test('kiln.lock\'s AMI id is read even when the pattern now matches a newer image, with a warning; its digests must match', async () => {
  warnings.length = 0;
  const h = fileHashes(disks.old);
  const img = await fetchVerifiedImage(request('ec2://eu-west-1/debian-13-amd64-*', { locked: { ...h, ami: amis.old } }, 'cache-b'));
  assert.equal(img.ami?.imageId, amis.old);
  assert.deepEqual(img.checks, [`owner ${VENDOR} of ${amis.old} pinned in kiln.yaml`, 'sha256 pinned in kiln.lock', 'sha512 pinned in kiln.lock']);
  assert.ok(warnings.some((w) => w.includes(`${amis.newer} (debian-13-amd64-20261115) is now the newest image matching debian-13-amd64-*; kiln.lock keeps ${amis.old}`)), warnings.join('\n'));
  await assert.rejects(fetchVerifiedImage(request('ec2://eu-west-1/debian-13-amd64-*', { locked: { ...fileHashes(disks.newer), ami: amis.old } }, 'cache-c')),
    (e: KilnError) => e instanceof KilnError && /does not match: sha256 pinned in kiln\.lock; sha512 pinned in kiln\.lock/.test(e.message));
});

test('an AMI of another account than the pinned owner is refused, by id, before anything is copied or read', async () => {
  const copies = standin.requests.filter((q) => q.operation === 'CopyImage').length;
  await assert.rejects(fetchVerifiedImage(request(`ec2://eu-west-1/${amis.foreign}`)),
    (e: KilnError) => e instanceof KilnError && e.message === `${amis.foreign} in eu-west-1 belongs to account ${OTHER}, not to ${VENDOR} pinned in source.image.owner`);
  assert.equal(standin.requests.filter((q) => q.operation === 'CopyImage').length, copies);
});
