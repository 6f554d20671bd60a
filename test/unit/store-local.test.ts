import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, openSync, readdirSync, readSync, readFileSync, writeFileSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openStore, DigestMismatchError, TagExistsError } from '../../src/store/index.js';
import { ReleaseConflictError } from '../../src/store/release-store.js';
import { fakeArtifacts, fakeRecord, publishFake, scratch, sha256File } from './store-fixtures.js';
import { makeProvenance, makeSbom } from '../../src/store/index.js';
import { withLock } from '../../src/store/lock.js';
import { requireOnHost } from './host-requirements.js';

const child = fileURLToPath(new URL('./store-child.js', import.meta.url));

export function flipByte(p: string, offset = 100): void {
  chmodSync(p, 0o644);
  const fd = openSync(p, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, offset);
  b[0] ^= 0xff;
  writeSync(fd, b, 0, 1, offset);
  closeSync(fd);
}

function assertLayoutValid(dir: string): void {
  const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
  for (const m of idx.manifests) {
    const p = join(dir, 'blobs', 'sha256', m.digest.slice(7));
    assert.equal(`sha256:${sha256File(p)}`, m.digest, `index entry ${m.annotations['org.opencontainers.image.ref.name']} matches its blob`);
    const man = JSON.parse(readFileSync(p, 'utf8')) as { config?: { digest: string }; layers?: { digest: string }[] };
    for (const d of [man.config, ...(man.layers ?? [])].filter(Boolean) as { digest: string }[]) {
      assert.equal(`sha256:${sha256File(join(dir, 'blobs', 'sha256', d.digest.slice(7)))}`, d.digest);
    }
  }
}

test('publish, list, resolve by version and format; blobs are read-only and verified', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const { digest, artifacts } = await publishFake(store, dir, 'web', 'release-0.1.0');
  assert.match(digest, /^sha256:[a-f0-9]{64}$/);
  assert.equal(await store.exists('web', 'release-0.1.0'), true);
  assert.equal(await store.exists('web', 'release-0.2.0'), false);
  const r = await store.resolve('web@release-0.1.0', { format: 'qcow2' });
  assert.equal(r.digest, digest);
  assert.equal(r.artifact?.sha256, artifacts[1].sha256);
  assert.equal(sha256File(r.artifact!.location), artifacts[1].sha256);
  assert.equal(statSync(r.artifact!.location).mode & 0o777, 0o444);
  await assert.rejects(store.resolve('web@release-0.1.0', { format: 'vmdk' }), /has no vmdk artifact/);
  const list = await store.list();
  assert.deepEqual(list.map((l) => [l.name, l.version, l.date, l.formats.join(','), l.status]), [['web', 'release-0.1.0', '2023-11-14T22:13:20Z', 'raw,qcow2', 'ok']]);
  assertLayoutValid(join(dir, 'store'));
  // The record in the config blob is what the build said, with artifact file names.
  const e = await store.release('web', 'release-0.1.0');
  assert.deepEqual(e?.record.artifacts.map((a) => a.format), ['raw', 'qcow2']);
  assert.equal(e?.record.source.packages?.length, 2);
});

test('a version is immutable: a second publish with other content is a conflict naming both digests; with the same content it is "identical"', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const first = await publishFake(store, dir, 'web', 'release-0.1.0');
  assert.equal(first.identical, false);
  const before = readFileSync(join(dir, 'store', 'index.json'), 'utf8');
  await assert.rejects(publishFake(store, dir, 'web', 'release-0.1.0'), (e: Error) => e instanceof ReleaseConflictError
    && e.message.includes(first.digest) && /already released .* with other content than this build's sha256:[0-9a-f]{64}/.test(e.message)
    && /raw: released .* this build /.test(e.detail ?? ''));
  // The same artifacts (another runner's build of the same content, with other build facts) are a success that writes nothing.
  const again = await publishFake(store, dir, 'web', 'release-0.1.0', { artifacts: first.artifacts, buildSeconds: 99 });
  assert.deepEqual([again.identical, again.digest], [true, first.digest]);
  assert.match(again.ours ?? '', /^sha256:/);
  assert.notEqual(again.ours, first.digest);
  assert.equal(readFileSync(join(dir, 'store', 'index.json'), 'utf8'), before, 'the store is unchanged');
  assert.equal((await store.resolve('web@release-0.1.0', { format: 'raw' })).digest, first.digest);
  // Another image may use the same version.
  await publishFake(store, dir, 'db', 'release-0.1.0');
  assert.deepEqual((await store.list()).map((l) => `${l.name}@${l.version}`), ['db@release-0.1.0', 'web@release-0.1.0']);
});

test('revocation is recorded beside the release, never changing it; resolve refuses it unless forced', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const { digest } = await publishFake(store, dir, 'web', 'release-0.1.0');
  const before = readFileSync(join(dir, 'store', 'blobs', 'sha256', digest.slice(7)));
  await store.revoke('web@release-0.1.0', 'CVE-2024-0001 in openssh');
  await assert.rejects(store.resolve('web@release-0.1.0'), /revoked: CVE-2024-0001 in openssh/);
  const forced = await store.resolve('web@release-0.1.0', { force: true, format: 'raw' });
  assert.equal(forced.digest, digest);
  assert.equal(forced.revoked?.reason, 'CVE-2024-0001 in openssh');
  assert.deepEqual(readFileSync(join(dir, 'store', 'blobs', 'sha256', digest.slice(7))), before);
  const l = (await store.list('web'))[0];
  assert.equal(l.status, 'revoked');
  assert.equal(l.reason, 'CVE-2024-0001 in openssh');
  await assert.rejects(store.revoke('web@release-0.1.0', 'again'), /already revoked/);
});

test('channels point at releases, resolve through name@channel, and log every move', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const a = await publishFake(store, dir, 'web', 'release-0.1.0');
  const b = await publishFake(store, dir, 'web', 'release-0.2.0');
  await store.channelSet('production', 'web@release-0.1.0');
  assert.equal((await store.resolve('web@production', { format: 'raw' })).digest, a.digest);
  await store.channelSet('production', 'web@release-0.2.0');
  const r = await store.resolve('web@production', { format: 'raw' });
  assert.equal(r.digest, b.digest);
  assert.equal(r.channel, 'production');
  const s = await store.channelGet('web', 'production');
  assert.equal(s?.log.length, 2);
  assert.equal(s?.log[0].previous, null);
  assert.deepEqual(s?.log[1].previous, { version: 'release-0.1.0', digest: a.digest });
  assert.ok(Date.parse(s!.log[1].time) >= Date.parse(s!.log[0].time));
  assert.deepEqual((await store.channelList()).map((c) => `${c.name}@${c.channel}=${c.version}`), ['web@production=release-0.2.0']);
  await assert.rejects(store.channelSet('release-0.1.0', 'web@release-0.2.0'), /is a version/);
  await assert.rejects(store.resolve('web@staging'), /no release web@staging/);
  // Channels are not releases.
  assert.deepEqual((await store.list('web')).map((l) => l.version), ['release-0.1.0', 'release-0.2.0']);
  await store.revoke('web@release-0.2.0', 'broken');
  await assert.rejects(store.resolve('web@production'), /revoked: broken/);
});

test('cloud image ids are added later without changing the release', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const { digest } = await publishFake(store, dir, 'web', 'release-0.1.0');
  await store.addCloudIds('web@release-0.1.0', { aws: { 'eu-west-1': 'ami-0123' } });
  await store.addCloudIds('web@release-0.1.0', { aws: { 'us-east-1': 'ami-4567' }, azure: { westeurope: '/images/web' } });
  const r = await store.resolve('web@release-0.1.0', { format: 'raw' });
  assert.equal(r.digest, digest);
  assert.deepEqual(r.cloudIds, { aws: { 'eu-west-1': 'ami-0123', 'us-east-1': 'ami-4567' }, azure: { westeurope: '/images/web' } });
});

test('a flipped byte in any blob fails verify and resolve, naming the blob', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const { artifacts } = await publishFake(store, dir, 'web', 'release-0.1.0');
  assert.equal((await store.verify('web@release-0.1.0')).ok, true);
  const blob = join(dir, 'store', 'blobs', 'sha256', artifacts[0].sha256);
  flipByte(blob, 12345);
  const v = await store.verify('web@release-0.1.0');
  assert.equal(v.ok, false);
  const bad = v.checked.filter((c) => !c.ok);
  assert.equal(bad.length, 1);
  assert.match(bad[0].problem ?? '', new RegExp(`blob ${blob}: digest mismatch`));
  await assert.rejects(store.resolve('web@release-0.1.0', { format: 'raw' }), (e: Error) => e instanceof DigestMismatchError && e.message.includes(blob));
  // The record (config blob) too.
  const e = await store.release('web', 'release-0.1.0');
  flipByte(join(dir, 'store', 'blobs', 'sha256', e!.manifest.config.digest.slice(7)), 5);
  await assert.rejects(store.resolve('web@release-0.1.0', { format: 'qcow2' }), new RegExp(`blob .*${e!.manifest.config.digest.slice(7)}: digest mismatch`));
});

test('an artifact that changed after the build recorded its digest is refused', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const artifacts = fakeArtifacts(dir, 'web', 'v1', { raw: 1 << 20 });
  flipByte(artifacts[0].file, 7);
  const record = fakeRecord('web', 'v1');
  await assert.rejects(store.publish({ record, artifacts, sbom: makeSbom(record), provenance: makeProvenance(record, artifacts) }), /digest mismatch/);
  assert.equal(await store.exists('web', 'v1'), false);
});

function runChild(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [child, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d; });
    p.on('close', (code) => resolve({ code, out }));
  });
}

test('two processes publishing the same version: with other content exactly one wins and the other names both digests; with the same content both pass, one "identical"', async () => {
  const dir = scratch();
  const storeDir = join(dir, 'store');
  for (let round = 0; round < 3; round++) {
    const v = `race-${round}`;
    const results = await Promise.all([runChild([storeDir, dir, 'web', v]), runChild([storeDir, dir, 'web', v])]);
    const ok = results.filter((r) => r.out.startsWith('OK'));
    const failed = results.filter((r) => r.out.startsWith('FAIL'));
    assert.equal(ok.length, 1, results.map((r) => r.out).join(' | '));
    assert.equal(failed.length, 1);
    const won = ok[0].out.trim().split(' ')[1];
    assert.match(failed[0].out, /already released .* as (sha256:[0-9a-f]{64}) with other content than this build's sha256:[0-9a-f]{64}/);
    assert.ok(failed[0].out.includes(won), 'the conflict names the release that won');
    const store = await openStore(storeDir, dir);
    assert.equal((await store.resolve(`web@${v}`, { format: 'raw' })).digest, won);
  }
  for (let round = 0; round < 3; round++) {
    const v = `same-${round}`;
    const results = await Promise.all([runChild([storeDir, dir, 'web', v, 'same']), runChild([storeDir, dir, 'web', v, 'same'])]);
    assert.deepEqual(results.map((r) => r.out.split(' ')[0]).sort(), ['OK', 'OK'], results.map((r) => r.out).join(' | '));
    const identical = results.filter((r) => r.out.trim().endsWith(' identical'));
    assert.equal(identical.length, 1, results.map((r) => r.out).join(' | '));
    const store = await openStore(storeDir, dir);
    const there = (await store.resolve(`web@${v}`, { format: 'raw' })).digest;
    assert.deepEqual(results.map((r) => r.out.trim().split(' ')[1]), [there, there], 'both report the release that is there');
    assert.equal((await store.verify(`web@${v}`)).ok, true);
  }
  assertLayoutValid(storeDir);
  const store = await openStore(storeDir, dir);
  assert.equal((await store.list('web')).length, 6);
});

test('kill -9 in the middle of copying a large artifact leaves a valid store; a rerun succeeds', async () => {
  const dir = scratch();
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  await publishFake(store, dir, 'web', 'release-0.1.0');
  const p = spawn(process.execPath, [child, storeDir, dir, 'web', 'release-0.2.0', 'pause'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    p.stdout.on('data', (d: Buffer) => { if (d.toString().includes('MID')) resolve(); });
    p.on('close', () => reject(new Error('child ended before reaching the middle of the copy')));
  });
  const tmp = join(storeDir, '.kiln-tmp');
  const partial = readdirSync(tmp).filter((n) => n.startsWith(`${p.pid}-`));
  assert.ok(partial.length >= 1, 'a partial blob is being written');
  p.kill('SIGKILL');
  await new Promise((r) => p.on('close', r));
  assertLayoutValid(storeDir);
  const again = await openStore(storeDir, dir);
  assert.deepEqual((await again.list('web')).map((l) => l.version), ['release-0.1.0']);
  assert.deepEqual(readdirSync(tmp).filter((n) => n.startsWith(`${p.pid}-`)), [], 'orphans of the dead writer are removed');
  const r = await runChild([storeDir, dir, 'web', 'release-0.2.0']);
  assert.match(r.out, /^OK/);
  assert.equal((await again.verify('web@release-0.2.0')).ok, true);
});

test('a stale lock left by a killed process is broken; a live one is waited for', async () => {
  const dir = scratch();
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
  writeFileSync(join(storeDir, 'index.json.lock'), JSON.stringify({ pid: Number(dead), host: (await import('node:os')).hostname(), since: 'then' }));
  await publishFake(store, dir, 'web', 'v1');
  assert.equal(existsSync(join(storeDir, 'index.json.lock')), false);
  const lock = join(storeDir, 'index.json.lock');
  writeFileSync(lock, JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), since: 'now' }));
  await assert.rejects(withLock(lock, async () => 1, 300), /locked by another Kiln process \(pid \d+/);
  assert.equal(existsSync(lock), true, 'a live holder keeps its lock');
});

test('skopeo reads a release from the layout and sees the same manifest digest', async () => {
  requireOnHost('/usr/bin/skopeo', 'package skopeo');
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const { digest } = await publishFake(store, dir, 'web', 'release-0.1.0');
  const r = spawnSync('skopeo', ['inspect', '--raw', `oci:${join(dir, 'store')}:web:release-0.1.0`]);
  assert.equal(r.status, 0, r.stderr.toString());
  assert.equal(`sha256:${(await import('node:crypto')).createHash('sha256').update(r.stdout).digest('hex')}`, digest);
  assert.equal(JSON.parse(r.stdout.toString()).artifactType, 'application/vnd.kiln.release.v1+json');
});

test('layers carry the documented media types; a release written with the older shared-mime-info types still resolves and verifies', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  await publishFake(store, dir, 'web', 'release-0.1.0');
  const now = await store.resolve('web@release-0.1.0', { format: 'qcow2' });
  assert.deepEqual(now.artifacts.map((a) => a.mediaType), ['application/vnd.kiln.disk.raw', 'application/vnd.kiln.disk.qcow2']);
  // What Kiln wrote before the format registry: the same layers under application/x-* types.
  const old = fakeArtifacts(dir, 'web', 'release-0.0.9').map((a) => ({ ...a, mediaType: a.format === 'raw' ? 'application/x-raw-disk-image' : 'application/x-qemu-disk' }));
  const record = { ...fakeRecord('web', 'release-0.0.9'), artifacts: old.map((a) => ({ format: a.format, file: a.file.split('/').pop() ?? '', size: a.size, sha256: a.sha256 })) };
  await store.publish({ record: fakeRecord('web', 'release-0.0.9'), artifacts: old, sbom: makeSbom(record), provenance: makeProvenance(record, old) });
  const r = await store.resolve('web@release-0.0.9', { format: 'qcow2' });
  assert.equal(r.artifact?.mediaType, 'application/x-qemu-disk');
  assert.equal(sha256File(r.artifact!.location), old[1].sha256);
  const report = await store.verify('web@release-0.0.9');
  assert.deepEqual(report.checked.filter((c) => !c.ok), [], 'every layer verifies');
});

test('staged artifacts: copied and hashed into the store\'s scratch ahead of the publish, then moved into place; the same release as an unstaged publish', async () => {
  const dir = scratch();
  const plain = await openStore(join(dir, 'plain'), dir);
  const store = await openStore(join(dir, 'staged'), dir);
  const artifacts = fakeArtifacts(dir, 'web', 'release-0.1.0');
  const record = fakeRecord('web', 'release-0.1.0');
  const full = { ...record, artifacts: artifacts.map((a) => ({ format: a.format, file: a.file.split('/').pop() ?? '', size: a.size, sha256: a.sha256 })) };
  const meta = { sbom: makeSbom(full), provenance: makeProvenance(full, artifacts) };
  const unstaged = await plain.publish({ record, artifacts, ...meta });

  const tmp = join(dir, 'staged', '.kiln-tmp');
  const staged = await Promise.all(artifacts.map(async (a) => ({ ...a, staged: (await store.stage(a.file))!.path })));
  for (const a of staged) {
    assert.ok(a.staged.startsWith(`${tmp}/`), 'in the store\'s own scratch');
    assert.equal(sha256File(a.staged), a.sha256);
  }
  const r = await store.publish({ record, artifacts: staged, ...meta });
  assert.equal(r.digest, unstaged.digest, 'the same manifest, the same blobs');
  assertLayoutValid(join(dir, 'staged'));
  assert.deepEqual(readdirSync(tmp).filter((n) => n.startsWith(`${process.pid}-`)), [], 'the staged copies were moved, none left');
  for (const a of artifacts) assert.equal(statSync(join(dir, 'staged', 'blobs', 'sha256', a.sha256)).mode & 0o777, 0o444);
});

test('a staged copy whose digest is not the one the build recorded is refused, and nothing is released; a path the store did not stage is refused', async () => {
  const dir = scratch();
  const store = await openStore(join(dir, 'store'), dir);
  const [a] = fakeArtifacts(dir, 'web', 'release-0.1.0', { raw: 1 << 20 });
  // The build hashed the file, then it changed before the store copied it.
  const b = (await store.stage(a.file))!;
  const record = fakeRecord('web', 'release-0.1.0');
  const other = { ...a, sha256: 'e'.repeat(64), staged: b.path };
  const full = { ...record, artifacts: [{ format: 'raw', file: 'x', size: a.size, sha256: other.sha256 }] };
  await assert.rejects(store.publish({ record, artifacts: [other], sbom: makeSbom(full), provenance: makeProvenance(full, [other]) }),
    (e: unknown) => e instanceof DigestMismatchError && new RegExp(`expected sha256:${'e'.repeat(64)}.*got sha256:${a.sha256}`).test(e.message));
  assert.deepEqual(await store.list('web'), []);
  assert.equal(existsSync(b.path), false, 'the refused copy is removed');

  const planted = join(dir, 'store', '.kiln-tmp', `${process.pid}-planted-staged`);
  writeFileSync(planted, readFileSync(a.file));
  const full2 = { ...record, artifacts: [{ format: 'raw', file: 'x', size: a.size, sha256: a.sha256 }] };
  await assert.rejects(store.publish({ record, artifacts: [{ ...a, staged: planted }], sbom: makeSbom(full2), provenance: makeProvenance(full2, [a]) }), /was not staged by this store/);

  const left = (await store.stage(a.file))!;
  await store.discardStaged(left.path);
  assert.equal(existsSync(left.path), false, 'discardStaged removes a copy that will not be published');
});
