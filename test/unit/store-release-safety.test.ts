/**
 * A release is all or nothing and shares nothing writable with the build's outputs: an interrupt at
 * any point of a publish leaves the store as it was, and a released blob is a copy of its own.
 */
import { strict as assert } from 'node:assert';
import { closeSync, ftruncateSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import { InterruptedError } from '../../src/errors.js';
import { loadSigner, makeProvenance, makeSbom, openStore, type ReleaseStore } from '../../src/store/index.js';
import { LayoutStore } from '../../src/store/layout.js';
import { MT } from '../../src/store/oci.js';
import { fakeArtifacts, fakeRecord, publishFake, scratch, sshKey } from './store-fixtures.js';

const keyDir = scratch('kiln-key-');
const signerOnce = loadSigner(sshKey(keyDir, 'kiln').priv);

/** An AbortSignal stand-in that reports an interrupt at its n-th check (never when n is 0), and counts checks. */
function interruptAt(n: number): AbortSignal & { checks: number } {
  const s = {
    checks: 0,
    get aborted() { return n > 0 && s.checks >= n; },
    reason: new InterruptedError('SIGINT'),
    throwIfAborted() {
      s.checks++;
      if (n > 0 && s.checks >= n) throw s.reason;
    },
  };
  return s as unknown as AbortSignal & { checks: number };
}

function snapshot(storeDir: string) {
  return {
    index: readFileSync(join(storeDir, 'index.json'), 'utf8'),
    blobs: readdirSync(join(storeDir, 'blobs', 'sha256')).sort(),
    tmp: readdirSync(join(storeDir, '.kiln-tmp')).filter((n) => n.startsWith(`${process.pid}-`)),
  };
}

async function publishWith(store: ReleaseStore, dir: string, version: string, signal: AbortSignal) {
  const artifacts = fakeArtifacts(dir, 'web', version, { raw: 9 << 20, qcow2: 1 << 20 });
  const record = fakeRecord('web', version);
  return store.publish({ record, artifacts, sbom: makeSbom(record), provenance: makeProvenance(record, artifacts), signer: await signerOnce, signal });
}

test('an interrupt at any point of a publish leaves the store as it was: no tag, no new blob, no temp file', async () => {
  const dir = scratch();
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  await publishFake(store, dir, 'web', 'release-0.1.0', { signer: await signerOnce });
  // A full publish, to count its interrupt checks (each blob, each chunk of a copy, the tag).
  const counting = interruptAt(0);
  await publishWith(store, dir, 'release-0.9.0', counting);
  assert.ok(counting.checks >= 10, `a publish checks for an interrupt often (${counting.checks} checks)`);
  const before = snapshot(storeDir);
  for (let n = 1; n <= counting.checks; n++) {
    await assert.rejects(publishWith(store, dir, 'release-0.2.0', interruptAt(n)), (e: Error) => e instanceof InterruptedError, `interrupt at check ${n}`);
    assert.deepEqual(snapshot(storeDir), before, `interrupt at check ${n}: the store is as before`);
    assert.equal(await store.exists('web', 'release-0.2.0'), false);
  }
  const intact = async (ref: string) => (await store.verify(ref)).checked.every((c) => c.ok);
  assert.equal(await intact('web@release-0.1.0'), true);
  assert.deepEqual((await store.list('web')).map((l) => l.version), ['release-0.1.0', 'release-0.9.0']);
  // And the interrupted version publishes cleanly afterwards.
  await publishWith(store, dir, 'release-0.2.0', interruptAt(0));
  assert.equal(await intact('web@release-0.2.0'), true);
  assert.equal((await store.referrers('web', (await store.release('web', 'release-0.2.0'))!.digest)).length, 1, 'one signature, none left over from the interrupted attempts');
});

test('a tag is refused when a blob its manifest names is missing', async () => {
  const dir = scratch();
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  const layout = store.backend as LayoutStore;
  const layer = { mediaType: 'application/octet-stream', digest: `sha256:${'0'.repeat(64)}`, size: 1 };
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: layer, layers: [] }));
  await assert.rejects(layout.createTag('web', 'release-0.1.0', manifest, MT.manifest), /blob sha256:0{64} is missing.*not tagged/);
  assert.deepEqual(await layout.listTags('web'), []);
});

test('a released blob is a copy: another inode, a sparse artifact stays sparse, writing the artifact does not change the release', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  // A 256 MiB raw disk holding 2 MiB of data.
  const file = join(dir, 'web-release-0.1.0.raw');
  const size = 256 << 20;
  const fd = openSync(file, 'w');
  const data = randomBytes(1 << 20);
  writeSync(fd, data, 0, data.length, 0);
  writeSync(fd, data, 0, data.length, 100 << 20);
  ftruncateSync(fd, size);
  closeSync(fd);
  const h = createHash('sha256');
  const whole = Buffer.alloc(size);
  data.copy(whole, 0);
  data.copy(whole, 100 << 20);
  const sha256 = h.update(whole).digest('hex');
  const record = fakeRecord('web', 'release-0.1.0');
  const artifacts = [{ format: 'raw', file, size, sha256 }];
  await store.publish({ record, artifacts, sbom: makeSbom(record), provenance: makeProvenance(record, artifacts) });
  const r = await store.resolve('web@release-0.1.0', { format: 'raw' });
  const blob = statSync(r.artifact!.location);
  assert.notEqual(blob.ino, statSync(file).ino, 'the blob is not the artifact file');
  assert.equal(blob.size, size);
  assert.ok(blob.blocks * 512 < 8 << 20, `the blob keeps the holes (${blob.blocks * 512} bytes allocated)`);
  const w = openSync(file, 'r+');
  writeSync(w, Buffer.from('written after the release'), 0, 25, 5000);
  closeSync(w);
  assert.equal((await store.verify('web@release-0.1.0')).ok, true, 'the release did not change');
  rmSync(dir, { recursive: true, force: true });
});
