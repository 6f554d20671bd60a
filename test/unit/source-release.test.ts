/**
 * resolveParent against a real local store: a parent named by a channel resolves through it, and a
 * parent kiln.lock pins resolves by that digest after the channel has moved, with the trust policy
 * applied all the same (a revoked pinned parent is refused). The child build itself is in
 * test/e2e/vendor-image.test.ts.
 */
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { rmSync } from 'node:fs';
import { KilnError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { resolveParent } from '../../src/source/release.js';
import { openStore } from '../../src/store/index.js';
import { DigestMismatchError } from '../../src/store/blobio.js';
import { loadTemplate } from '../../src/template/load.js';
import { publishFake, scratch } from './store-fixtures.js';
import { startRegistry, type TestRegistry } from './store-registry-fixture.js';

const dir = scratch('kiln-source-release-');
after(() => rmSync(dir, { recursive: true, force: true }));

function template(ref: string) {
  writeFileSync(join(dir, 'kiln.yaml'), `name: web\nsource:\n  release:\n    ref: ${ref}\n    store: ./parents\nprovision:\n  playbook: site.yml\ndisk:\n  size: 1GiB\nformats: [raw]\n`);
  writeFileSync(join(dir, 'site.yml'), '- hosts: all\n  tasks: []\n');
  return loadTemplate(join(dir, 'kiln.yaml'));
}

function recording(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { verbose: false, info() {}, debug() {}, warn(m: string) { warnings.push(m); }, warnings };
}

test('a parent pinned by kiln.lock resolves by its digest after the channel moved; a revoked one is refused all the same', async () => {
  const store = await openStore(join(dir, 'parents'), dir);
  const old = await publishFake(store, dir, 'base', 'release-1.0.0', { sizes: { raw: 1 << 20 } });
  const newer = await publishFake(store, dir, 'base', 'release-1.1.0', { sizes: { raw: 1 << 20 } });
  await store.channelSet('stable', 'base@release-1.0.0');
  const t = template('base@stable');
  const cache = join(dir, 'cache');

  const unpinned = await resolveParent(t.config, t.dir, cache, recording());
  assert.deepEqual([unpinned.parent.version, unpinned.parent.digest, unpinned.parent.channel], ['release-1.0.0', old.digest, 'stable']);
  assert.equal(readFileSync(unpinned.image.file).equals(readFileSync(old.artifacts[0].file)), true, "the parent's raw, copied into the cache");

  await store.channelSet('stable', 'base@release-1.1.0');
  const pin = { ref: 'base@stable', name: 'base', version: 'release-1.0.0', digest: old.digest };
  const log = recording();
  const pinned = await resolveParent(t.config, t.dir, cache, log, undefined, pin);
  assert.deepEqual([pinned.parent.version, pinned.parent.digest, pinned.parent.channel], ['release-1.0.0', old.digest, 'stable'], 'the locked parent, and the channel it was named by');
  assert.equal(pinned.artifact.sha256, old.artifacts[0].sha256);
  assert.match(log.warnings.join('\n'), /base@stable is now base@release-1\.1\.0 .*kiln\.lock pins release-1\.0\.0: building on that/);
  const moved = await resolveParent(t.config, t.dir, cache, recording());
  assert.equal(moved.parent.digest, newer.digest, 'without the lock, the channel decides');

  await assert.rejects(resolveParent(t.config, t.dir, cache, recording(), undefined, { ...pin, version: 'release-1.1.0' }),
    (e: unknown) => e instanceof KilnError && /kiln\.lock pins base@release-1\.1\.0 as sha256:[0-9a-f]{64}, but that digest is base@release-1\.0\.0/.test(e.message));

  await store.revoke('base@release-1.0.0', 'test: a hardening gap');
  await assert.rejects(resolveParent(t.config, t.dir, cache, recording(), undefined, pin),
    (e: unknown) => e instanceof KilnError && /base@release-1\.0\.0 is revoked: test: a hardening gap/.test(e.message), 'a lock does not exempt its parent from the trust policy');
});

describe('a parent in a registry (Debian\'s docker-registry on 127.0.0.1)', () => {
  let reg: TestRegistry;
  before(async () => { reg = await startRegistry(); });
  after(async () => { await reg?.stop(); });

  test('its qcow2 is downloaded into the cache, hashed against the layer the release record names; a changed blob in the registry is refused', async () => {
    const spec = `oci://127.0.0.1:${reg.port}/parents`;
    const store = await openStore(spec, dir);
    const base = await publishFake(store, dir, 'regbase', 'release-2.0.0', { sizes: { raw: 2 << 20, qcow2: 1 << 20 } });
    const qcow2 = base.artifacts.find((x) => x.format === 'qcow2')!;
    writeFileSync(join(dir, 'kiln.yaml'), `name: web\nsource:\n  release:\n    ref: regbase@release-2.0.0\n    store: ${spec}\nprovision:\n  playbook: site.yml\ndisk:\n  size: 1GiB\nformats: [raw]\n`);
    const t = loadTemplate(join(dir, 'kiln.yaml'));
    const r = await resolveParent(t.config, t.dir, join(dir, 'reg-cache'), recording());
    assert.equal(r.artifact.format, 'qcow2', 'from a registry, the smallest disk');
    assert.equal(readFileSync(r.image.file).equals(readFileSync(qcow2.file)), true);
    assert.equal(r.store, spec);
    assert.deepEqual([r.parent.name, r.parent.version, r.parent.digest], ['regbase', 'release-2.0.0', base.digest]);

    // The registry's copy of the layer changes under the same digest (a compromised registry): nothing is cached or used.
    const blob = join(reg.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', qcow2.sha256.slice(0, 2), qcow2.sha256, 'data');
    const bytes = readFileSync(blob);
    bytes[bytes.length >> 1] ^= 0x01;
    writeFileSync(blob, bytes);
    await assert.rejects(resolveParent(t.config, t.dir, join(dir, 'reg-cache-2'), recording()), (e: unknown) => e instanceof DigestMismatchError && new RegExp(`digest mismatch: expected sha256:${qcow2.sha256}`).test(e.message));
    assert.deepEqual(readdirSync(join(dir, 'reg-cache-2', 'images')).filter((n) => !n.startsWith('.')), [], 'nothing cached');
  });
});
