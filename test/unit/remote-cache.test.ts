/**
 * The step cache shared through a registry (src/pipeline/remote-cache.ts), against Debian's
 * docker-registry on 127.0.0.1: a fresh runner's empty cache gets an entry pushed by another,
 * sparse and verified; what a compromised registry serves (a file that is not what its layer says,
 * an entry filed under another key or kind, a layer longer than its file) is a miss with a warning, never an entry;
 * with --cache-trust-key, only entries a trusted key signed are used, and nothing a registry changes in one passes.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, writeSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { CACHE_MT, CACHE_REPO, RemoteCache } from '../../src/pipeline/remote-cache.js';
import { StepCache } from '../../src/pipeline/step-cache.js';
import { MT } from '../../src/store/oci.js';
import { RegistryStore } from '../../src/store/registry.js';
import { loadSigner, loadTrustedKey } from '../../src/store/signing.js';
import { scratch, sshKey } from './store-fixtures.js';
import { startRegistry, type TestRegistry } from './store-registry-fixture.js';

let reg: TestRegistry;
before(async () => { reg = await startRegistry(); });
after(async () => { await reg?.stop(); });

const key = (s: string) => createHash('sha256').update(s).digest('hex');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function capture() {
  const warnings: string[] = [];
  return { warnings, logger: { ...silentLogger, warn: (m: string) => { warnings.push(m); } } };
}

/** A 64 MiB file with 1 MiB of data at its start and end, holes between. */
function sparseFile(path: string): { sha256: string; size: number } {
  const fd = openSync(path, 'w');
  const head = randomBytes(1 << 20);
  const tail = randomBytes(1 << 20);
  writeSync(fd, head, 0, head.length, 0);
  writeSync(fd, tail, 0, tail.length, (64 << 20) - tail.length);
  closeSync(fd);
  const h = createHash('sha256').update(head).update(Buffer.alloc((64 << 20) - 2 * (1 << 20))).update(tail);
  return { sha256: h.digest('hex'), size: 64 << 20 };
}

test('an entry pushed by one runner is a verified, sparse local entry on a runner with an empty cache', async () => {
  const spec = `oci://127.0.0.1:${reg.port}/team`;
  const a = scratch();
  const disk = sparseFile(join(a, 'disk.raw'));
  const k = key('disk-1');
  const remoteA = new RemoteCache(spec, join(a, 'cache', 'remote-push'), silentLogger);
  const cacheA = new StepCache(join(a, 'cache'), silentLogger, remoteA);
  await cacheA.put('disk', k, { tree: 'abc' }, { layout: 'gpt' }, [{ name: 'disk.raw', from: join(a, 'disk.raw') }]);
  await remoteA.flush();
  assert.deepEqual(remoteA.stats.pushed, [`disk ${k.slice(0, 12)}`]);
  // In the registry: one artifact tagged with the key, its layer a sparse tar (the data, not the holes).
  const m = JSON.parse(Buffer.from(await (await fetch(`${reg.url}/v2/team/${CACHE_REPO}/manifests/${k}`, { headers: { accept: MT.manifest } })).arrayBuffer()).toString('utf8')) as { artifactType: string; layers: { size: number; annotations: Record<string, string> }[] };
  assert.equal(m.artifactType, CACHE_MT.artifact);
  assert.equal(m.layers[0].annotations['dev.kiln.cache.sha256'], disk.sha256);
  assert.ok(m.layers[0].size < 4 << 20, `the layer holds the data, not the holes: ${m.layers[0].size} bytes`);

  const b = scratch();
  const remoteB = new RemoteCache(spec, join(b, 'cache', 'remote-push'), silentLogger);
  const cacheB = new StepCache(join(b, 'cache'), silentLogger, remoteB);
  const hit = await cacheB.get<{ layout: string }>('disk', k);
  assert.ok(hit, 'the remote entry is a hit');
  assert.deepEqual(hit.data, { layout: 'gpt' });
  const file = hit.file('disk.raw');
  assert.equal(sha(readFileSync(file)), disk.sha256);
  assert.ok(statSync(file).blocks * 512 < 8 << 20, `the pulled disk is sparse (${statSync(file).blocks * 512} bytes allocated)`);
  assert.deepEqual(cacheB.fromRemote, ['disk']);
  assert.deepEqual(remoteB.stats.hits, [`disk ${k.slice(0, 12)}`]);
  // Now local: a second get does not ask the registry (it is the local entry, and a push finds the registry has it).
  assert.ok(await cacheB.get('disk', k));
  await remoteB.flush();
  assert.deepEqual(remoteB.stats.hits.length, 1);
  assert.deepEqual(remoteB.stats.pushed, [], 'the registry had it: nothing pushed again');
  // A step the registry does not have is a miss.
  assert.equal(await cacheB.get('disk', key('disk-2')), undefined);
});

test('what a compromised registry serves is a miss with a warning, never an entry', async () => {
  const spec = `oci://127.0.0.1:${reg.port}/evil`;
  const registry = new RegistryStore(spec);
  /** A layer as a hostile registry might make it: a tar of these members. */
  const tarLayer = (members: { name: string; data?: Buffer; link?: string; stored?: string }[]): Buffer => {
    const d = scratch('kiln-layer-');
    mkdirSync(join(d, 'in'));
    for (const m of members) {
      if (m.link) symlinkSync(m.link, join(d, 'in', m.name));
      else writeFileSync(join(d, 'in', m.name), m.data ?? Buffer.alloc(0));
    }
    // stored: the name the archive gives the member (GNU tar's --transform writes any name).
    const renames = members.filter((m) => m.stored).map((m) => `--transform=s|^${m.name}$|${m.stored}|`);
    execFileSync('tar', ['--format=posix', ...renames, '-cf', join(d, 'l.tar'), '-C', join(d, 'in'), ...members.map((m) => m.name)]);
    return readFileSync(join(d, 'l.tar'));
  };
  const put = async (k: string, kind: string, files: { name: string; layer: Buffer; sha256: string; size: number }[]) => {
    const layers = [];
    for (const f of files) {
      const digest = `sha256:${sha(f.layer)}`;
      await registry.putBlob(CACHE_REPO, { digest, size: f.layer.length, bytes: f.layer });
      layers.push({ mediaType: CACHE_MT.file, digest, size: f.layer.length, annotations: { 'org.opencontainers.image.title': f.name, 'dev.kiln.cache.sha256': f.sha256, 'dev.kiln.cache.size': String(f.size) } });
    }
    const config = Buffer.from(JSON.stringify({ kind, key: k, meta: { inputs: {}, data: null } }));
    await registry.putBlob(CACHE_REPO, { digest: `sha256:${sha(config)}`, size: config.length, bytes: config });
    const manifest = { schemaVersion: 2, mediaType: MT.manifest, artifactType: CACHE_MT.artifact, config: { mediaType: CACHE_MT.config, digest: `sha256:${sha(config)}`, size: config.length }, layers };
    await registry.createTag(CACHE_REPO, k, Buffer.from(JSON.stringify(manifest)), MT.manifest);
  };
  const good = randomBytes(4096);
  const honest = (name = 'tree.tar', data = good) => ({ name, layer: tarLayer([{ name, data }]), sha256: sha(data), size: data.length });
  const cases: [string, () => Promise<string>, RegExp][] = [
    ['a file that is not what its layer says', async () => { const k = key('lie'); await put(k, 'tree', [{ ...honest(), sha256: sha(randomBytes(8)) }]); return k; }, /tree\.tar unpacks to sha256 [0-9a-f]{64}; its layer says/],
    ['a file of another size than its layer says', async () => { const k = key('size'); await put(k, 'tree', [{ ...honest(), size: 4000 }]); return k; }, /tree\.tar unpacks to 4096 bytes; its layer says 4000/],
    ['an entry filed under another key', async () => { const k = key('moved'); const other = key('other'); await put(k, 'tree', [honest()]); const m = await registry.getManifest(CACHE_REPO, k); await registry.createTag(CACHE_REPO, other, m!.bytes, MT.manifest); return other; }, /is an entry for tree [0-9a-f]{12}, not tree/],
    ['an entry of another step', async () => { const k = key('kind'); await put(k, 'disk', [honest()]); return k; }, /is an entry for disk .* not tree/],
    ['a layer longer than its file', async () => { const k = key('bomb'); await put(k, 'tree', [{ name: 'tree.tar', layer: tarLayer([{ name: 'tree.tar', data: Buffer.alloc(40 << 20) }]), sha256: sha(good), size: 1024 }]); return k; }, /is longer than its file's size with the tar headers/],
    ['a path as a file name', async () => { const k = key('path'); await put(k, 'tree', [{ ...honest(), name: '../../escape' }]); return k; }, /expected a plain file name/],
    ['a layer of two files', async () => { const k = key('two'); await put(k, 'tree', [{ ...honest(), layer: tarLayer([{ name: 'tree.tar', data: good }, { name: 'extra', data: good }]) }]); return k; }, /holds 2 entries; a cache layer holds one file/],
    ['a symbolic link out of the cache', async () => { const k = key('link'); await put(k, 'tree', [{ ...honest(), layer: tarLayer([{ name: 'tree.tar', link: '/etc/passwd' }]) }]); return k; }, /holds tree\.tar, not a regular file/],
    ['a member that climbs out', async () => { const k = key('climb'); await put(k, 'tree', [{ ...honest(), layer: tarLayer([{ name: 'x', stored: '../../escape', data: good }]) }]); return k; }, /tar -x of .* failed \(exit 2\): .*(Member name contains '\.\.'|Removing leading)|holds 0 entries/],
  ];
  for (const [what, make, why] of cases) {
    const k = await make();
    const dir = scratch();
    const { warnings, logger } = capture();
    const cache = new StepCache(join(dir, 'cache'), logger, new RemoteCache(spec, join(dir, 'cache', 'remote-push'), logger, { push: false }));
    assert.equal(await cache.get('tree', k), undefined, what);
    assert.equal(warnings.length, 1, `${what}: ${warnings.join('; ')}`);
    assert.match(warnings[0], why, what);
    assert.equal(existsSync(join(dir, 'cache', 'steps', k)), false, `${what}: no local entry`);
    assert.equal(existsSync(join(dir, 'escape')) || existsSync(join(dir, 'cache', 'escape')) || existsSync(join(dir, 'cache', 'steps', 'escape')), false, `${what}: nothing outside the pull's own directory`);
  }
});

test('a registry that is down is a warning: the build gets a miss, and a push failure never fails it', async () => {
  const dir = scratch();
  const { warnings, logger } = capture();
  const remote = new RemoteCache('oci://127.0.0.1:9/none', join(dir, 'cache', 'remote-push'), logger);
  const cache = new StepCache(join(dir, 'cache'), logger, remote);
  assert.equal(await cache.get('tree', key('x')), undefined);
  assert.match(warnings.join('\n'), /cannot reach registry oci:\/\/127\.0\.0\.1:9\/none/);
  await cache.put('audit', key('y'), {}, null, []);
  await remote.flush();
  assert.equal(remote.stats.failed.length, 1);
  assert.ok(await cache.get('audit', key('y')), 'the local entry is there all the same');
});

test('KILN_CACHE_REMOTE_PUSH=0 reads and never writes', async () => {
  const spec = `oci://127.0.0.1:${reg.port}/readonly`;
  const dir = scratch();
  process.env.KILN_CACHE_REMOTE_PUSH = '0';
  try {
    const remote = new RemoteCache(spec, join(dir, 'cache', 'remote-push'), silentLogger);
    await new StepCache(join(dir, 'cache'), silentLogger, remote).put('audit', key('ro'), {}, null, []);
    await remote.flush();
    assert.equal(remote.push, false);
    assert.equal((await fetch(`${reg.url}/v2/readonly/${CACHE_REPO}/manifests/${key('ro')}`, { method: 'HEAD', headers: { accept: MT.manifest } })).status, 404);
  } finally {
    delete process.env.KILN_CACHE_REMOTE_PUSH;
  }
});

test("a file hard-linked out of its entry while the push reads it (its ctime moves, its bytes do not) is pushed, and pulls verified", async () => {
  // What a build does: the formats step links the raw disk out of the disk step's entry while that
  // entry is being pushed; GNU tar then says "file changed as we read it" and exits 1.
  const spec = `oci://127.0.0.1:${reg.port}/linked`;
  const a = scratch();
  const data = randomBytes(48 << 20);
  writeFileSync(join(a, 'disk.raw'), data);
  const k = key('linked-1');
  const remoteA = new RemoteCache(spec, join(a, 'cache', 'remote-push'), silentLogger);
  const cacheA = new StepCache(join(a, 'cache'), silentLogger, remoteA);
  const entryFile = join(a, 'cache', 'steps', k, 'disk.raw');
  // Linking from before the entry exists (ln fails quietly until then) to after the push ended.
  const linker = (await import('node:child_process')).spawn('sh', ['-c', `while :; do ln -f "${entryFile}" "${a}/l1" 2>/dev/null; ln -f "${entryFile}" "${a}/l2" 2>/dev/null; done`], { stdio: 'ignore' });
  try {
    await cacheA.put('disk', k, {}, {}, [{ name: 'disk.raw', from: join(a, 'disk.raw') }]);
    assert.ok(existsSync(entryFile), entryFile);
    await remoteA.flush();
  } finally {
    linker.kill('SIGKILL');
  }
  assert.deepEqual(remoteA.stats.failed, []);
  assert.deepEqual(remoteA.stats.pushed, [`disk ${k.slice(0, 12)}`]);
  const b = scratch();
  const hit = await new StepCache(join(b, 'cache'), silentLogger, new RemoteCache(spec, join(b, 'cache', 'remote-push'), silentLogger)).get('disk', k);
  assert.ok(hit);
  assert.equal(sha(readFileSync(hit.file('disk.raw'))), sha(data));
});

test('signed entries: a runner that trusts the pushing key uses them and names the signer; SSH and OpenPGP keys', async () => {
  const keys = scratch('kiln-keys-');
  const ssh = sshKey(keys, 'runner');
  const openpgp = await import('openpgp');
  const pgp = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'CI runner', email: 'ci@example' }], format: 'armored' });
  writeFileSync(join(keys, 'pgp.key'), pgp.privateKey);
  writeFileSync(join(keys, 'pgp.pub'), pgp.publicKey);
  for (const [kind, priv, pub] of [['ssh', ssh.priv, ssh.pub], ['pgp', join(keys, 'pgp.key'), join(keys, 'pgp.pub')]]) {
    const spec = `oci://127.0.0.1:${reg.port}/signed-${kind}`;
    const signer = await loadSigner(priv);
    const a = scratch();
    writeFileSync(join(a, 'tree.tar'), randomBytes(8192));
    const k = key(`signed-${kind}`);
    const remoteA = new RemoteCache(spec, join(a, 'cache', 'remote-push'), silentLogger, { signer });
    await new StepCache(join(a, 'cache'), silentLogger, remoteA).put('tree', k, { base: 'x' }, { n: 1 }, [{ name: 'tree.tar', from: join(a, 'tree.tar') }]);
    await remoteA.flush();
    assert.deepEqual(remoteA.stats.pushed, [`tree ${k.slice(0, 12)}`], kind);
    const m = JSON.parse((await new RegistryStore(spec).getManifest(CACHE_REPO, k))!.bytes.toString('utf8')) as { annotations: Record<string, string> };
    assert.equal(JSON.parse(m.annotations['dev.kiln.cache.signature']).kind, kind);

    const b = scratch();
    const { warnings, logger } = capture();
    const remoteB = new RemoteCache(spec, join(b, 'cache', 'remote-push'), logger, { trust: [await loadTrustedKey(pub)], push: false });
    const hit = await new StepCache(join(b, 'cache'), logger, remoteB).get<{ n: number }>('tree', k);
    assert.ok(hit, `${kind}: ${warnings.join('; ')}`);
    assert.deepEqual(hit.data, { n: 1 });
    assert.equal(sha(readFileSync(hit.file('tree.tar'))), sha(readFileSync(join(a, 'tree.tar'))));
    // The signer as the check found it: the key's fingerprint (and its comment or user id).
    assert.equal(remoteB.stats.signers.length, 1, kind);
    assert.ok(remoteB.stats.signers[0].startsWith(signer.identity.split(' ')[0]), `${kind}: ${remoteB.stats.signers[0]} is ${signer.identity}`);
  }
});

test('with --cache-trust-key, an unsigned entry, another key, or anything a registry changes in a signed entry is a miss with a warning', async () => {
  const spec = `oci://127.0.0.1:${reg.port}/guarded`;
  const registry = new RegistryStore(spec);
  const keys = scratch('kiln-keys-');
  const trusted = sshKey(keys, 'trusted');
  const stranger = sshKey(keys, 'stranger');
  const trust = [await loadTrustedKey(trusted.pub)];
  /** An entry pushed by a runner with this signer (or none), its manifest as stored. */
  const pushed = async (name: string, signer?: string) => {
    const a = scratch();
    writeFileSync(join(a, 'tree.tar'), randomBytes(4096));
    const k = key(name);
    const remote = new RemoteCache(spec, join(a, 'cache', 'remote-push'), silentLogger, signer ? { signer: await loadSigner(signer) } : {});
    await new StepCache(join(a, 'cache'), silentLogger, remote).put('tree', k, {}, { n: 1 }, [{ name: 'tree.tar', from: join(a, 'tree.tar') }]);
    await remote.flush();
    assert.equal(remote.stats.pushed.length, 1, name);
    return { k, manifest: JSON.parse((await registry.getManifest(CACHE_REPO, k))!.bytes.toString('utf8')) as { config: { digest: string; size: number }; layers: { digest: string; size: number; annotations: Record<string, string> }[]; annotations: Record<string, string> } };
  };
  /** The registry tags a manifest of its own making under key k. */
  const retag = async (k: string, manifest: unknown) => { await registry.createTag(CACHE_REPO, k, Buffer.from(JSON.stringify(manifest)), MT.manifest); };
  /** The registry puts another manifest under an entry's own tag (as a compromised one can). */
  const replace = async (k: string, manifest: unknown) => {
    const r = await fetch(`${reg.url}/v2/guarded/${CACHE_REPO}/manifests/${k}`, { method: 'PUT', headers: { 'content-type': MT.manifest }, body: JSON.stringify(manifest) });
    assert.equal(r.status, 201, await r.text());
  };
  const blob = async (bytes: Buffer) => { const digest = `sha256:${sha(bytes)}`; await registry.putBlob(CACHE_REPO, { digest, size: bytes.length, bytes }); return { digest, size: bytes.length }; };
  const cases: [string, () => Promise<string>, RegExp][] = [
    ['an unsigned entry', async () => (await pushed('unsigned')).k, /is not signed, and --cache-trust-key \(.*trusted\.pub\) requires a signature/],
    ['an entry signed by a key it does not trust', async () => (await pushed('stranger', stranger.priv)).k, /is signed by SHA256:\S+, a key --cache-trust-key \(.*trusted\.pub\) does not trust/],
    ['a signed entry whose config the registry changed', async () => {
      const { k, manifest } = await pushed('config', trusted.priv);
      const config = JSON.parse((await registry.readBlob(CACHE_REPO, { mediaType: CACHE_MT.config, ...manifest.config })).toString('utf8'));
      config.meta.data = { n: 2 };
      await replace(k, { ...manifest, config: { mediaType: CACHE_MT.config, ...(await blob(Buffer.from(JSON.stringify(config)))) } });
      return k;
    }, /its signature by .* does not verify/],
    ['a signed entry filed under another key', async () => {
      const { manifest } = await pushed('moved', trusted.priv);
      const k = key('moved-elsewhere');
      await retag(k, manifest);
      return k;
    }, /its signature by .* does not verify/],
    ['a signed entry whose layer the registry swapped (its annotations made to match the new file)', async () => {
      const { k, manifest } = await pushed('swapped', trusted.priv);
      const other = await pushed('other-unsigned');
      await replace(k, { ...manifest, layers: other.manifest.layers });
      return k;
    }, /its layers are not the files its signed config lists/],
    ['a signature that is not one', async () => {
      const { k, manifest } = await pushed('garbage', trusted.priv);
      await replace(k, { ...manifest, annotations: { ...manifest.annotations, 'dev.kiln.cache.signature': '{"kind":"x509"' } });
      return k;
    }, /has an unreadable signature/],
  ];
  for (const [what, make, why] of cases) {
    const k = await make();
    const dir = scratch();
    const { warnings, logger } = capture();
    const remote = new RemoteCache(spec, join(dir, 'cache', 'remote-push'), logger, { trust, push: false });
    assert.equal(await new StepCache(join(dir, 'cache'), logger, remote).get('tree', k), undefined, what);
    assert.equal(warnings.length, 1, `${what}: ${warnings.join('; ')}`);
    assert.match(warnings[0], why, what);
    assert.equal(existsSync(join(dir, 'cache', 'steps', k)), false, `${what}: no local entry`);
    assert.deepEqual(remote.stats.hits, [], what);
  }
});

test('a runner that requires signed entries and has no key to sign its own pushes nothing, saying why', async () => {
  const spec = `oci://127.0.0.1:${reg.port}/trusting`;
  const dir = scratch();
  const remote = new RemoteCache(spec, join(dir, 'cache', 'remote-push'), silentLogger, { trust: [await loadTrustedKey(sshKey(scratch('kiln-keys-'), 'k').pub)] });
  await new StepCache(join(dir, 'cache'), silentLogger, remote).put('audit', key('trusting'), {}, null, []);
  await remote.flush();
  assert.equal(remote.push, false);
  assert.match(remote.pushOff ?? '', /requires signed entries \(--cache-trust-key\) and has no --cache-sign-key/);
  assert.equal((await fetch(`${reg.url}/v2/trusting/${CACHE_REPO}/manifests/${key('trusting')}`, { method: 'HEAD', headers: { accept: MT.manifest } })).status, 404);
});

test('kiln build refuses --cache-sign-key or --cache-trust-key without a remote cache to use them on (exit 2)', () => {
  const kiln = new URL('../../../bin/kiln.js', import.meta.url).pathname;
  const { KILN_CACHE_REMOTE: _, ...env } = process.env;
  for (const flag of ['--cache-sign-key', '--cache-trust-key']) {
    const r = spawnSync(process.execPath, [kiln, 'build', flag, 'key'], { encoding: 'utf8', env, cwd: scratch() });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`${flag} needs a remote cache to use it on`));
  }
});
