import assert from 'node:assert/strict';
import { test } from 'node:test';
import { diffLocks, formatChange, formatLock, LOCK_FORMAT_UPSTREAM, naiveVersionCompare, packageSetDigest, parseLock, snapshotUrlFor, type LockFile, type ArchiveLockFile, type LockedPackage } from '../../src/lock/file.js';
import { KilnError } from '../../src/errors.js';

const pkg = (name: string, version: string, architecture = 'amd64', c = 'a'): LockedPackage => ({
  name, version, architecture, sha256: c.repeat(64), size: 1000 + name.length, filename: `pool/main/${name[0]}/${name}/${name}_${version.replace(/^\d+:/, '')}_${architecture}.deb`,
});

const lockOf = (packages: LockedPackage[]): ArchiveLockFile => ({
  lock: 2, image: 'web',
  archive: {
    mirror: 'http://deb.debian.org/debian', suite: 'bookworm', components: ['main'], date: 1783764997, inRelease: 'b'.repeat(64), signedBy: 'ABCD', verified: true,
    indexes: [{ path: 'main/binary-amd64/Packages', sha256: 'c'.repeat(64), size: 50060337 }],
  },
  packages,
});

test('a lock is written sorted, one package per line, and reads back to the same lock', () => {
  const l = lockOf([pkg('zlib1g', '1:1.2.13.dfsg-1'), pkg('adduser', '3.134', 'all'), pkg('libc6', '2.36-9+deb12u13')]);
  const text = formatLock(l);
  const lines = text.split('\n').filter((x) => x.startsWith('  - '));
  assert.deepEqual(lines.map((x) => /name: "([^"]+)"/.exec(x)?.[1]), ['adduser', 'libc6', 'zlib1g']);
  assert.match(text, /date: "2026-07-11T10:16:37Z"/);
  const back = parseLock(text) as ArchiveLockFile;
  assert.deepEqual(back.packages, [...l.packages].sort((a, b) => a.name.localeCompare(b.name)));
  assert.equal(back.archive.date, l.archive.date);
  assert.equal(back.archive.signedBy, 'ABCD');
  assert.equal(formatLock(back), text, 'format(parse(text)) is the same text');
});

test('the package-set digest ignores order and metadata but not a sha256', () => {
  const a = lockOf([pkg('a', '1'), pkg('b', '2')]);
  const b = { ...lockOf([pkg('b', '2'), pkg('a', '1')]), image: 'other' };
  assert.equal(packageSetDigest(a), packageSetDigest(b));
  assert.notEqual(packageSetDigest(a), packageSetDigest(lockOf([pkg('a', '1', 'amd64', 'c'), pkg('b', '2')])));
});

test('bad locks are rejected with the entry named', () => {
  const good = formatLock(lockOf([pkg('nginx', '1.22.1-9')]));
  assert.throws(() => parseLock(good.replace(/sha256: "a+"/, 'sha256: "xyz"')), (e: unknown) => e instanceof KilnError && /packages\[0\] \(nginx\): sha256/.test(e.message));
  assert.throws(() => parseLock(good.replace('lock: 2', 'lock: 9')), /unsupported lock format 9/);
  assert.throws(() => parseLock(good.replace(/filename: "[^"]+"/, 'filename: "../../etc/passwd"')), /filename must be a path inside the archive/);
  const twice = good.replace(/(  - \{ name.*\n)/, '$1$1');
  assert.throws(() => parseLock(twice), /nginx:amd64 is listed twice/);
  assert.throws(() => parseLock('packages: [\n'), /not valid YAML/);
});

test('diffLocks lists added, removed, upgraded, downgraded and rebuilt packages by name', () => {
  const before = lockOf([pkg('nginx', '1.22.1-9+deb12u8'), pkg('curl', '7.88.1-10'), pkg('old', '1.0'), pkg('same', '1'), pkg('rebuilt', '2')]);
  const after = lockOf([pkg('nginx', '1.22.1-9+deb12u9'), pkg('curl', '7.88.1-10~bpo'), pkg('new', '2.0', 'all'), pkg('same', '1'), pkg('rebuilt', '2', 'amd64', 'f')]);
  const changes = diffLocks(before, after);
  assert.deepEqual(changes.map(formatChange), [
    '~ curl (amd64) 7.88.1-10 -> 7.88.1-10~bpo (downgrade)',
    '+ new (all) 2.0',
    '~ nginx (amd64) 1.22.1-9+deb12u8 -> 1.22.1-9+deb12u9',
    '- old (amd64) 1.0',
    '! rebuilt (amd64) 2: same version, different .deb (sha256)',
  ]);
  assert.deepEqual(diffLocks(after, after), []);
  assert.equal(diffLocks(undefined, after).every((c) => c.kind === 'added'), true);
});

test('Debian version order: epochs, tildes, numeric parts', () => {
  const lt = (a: string, b: string) => assert.ok(naiveVersionCompare(a, b) < 0 && naiveVersionCompare(b, a) > 0, `${a} < ${b}`);
  lt('1.0', '1.1');
  lt('1.9', '1.10');
  lt('1.0~rc1', '1.0');
  lt('2.0', '1:0.1');
  lt('1.22.1-9+deb12u8', '1.22.1-9+deb12u9');
  lt('1.2.13.dfsg-1', '1.2.13.dfsg-1+b1');
  assert.equal(naiveVersionCompare('1.0-1', '1.0-1'), 0);
});

test('the suggested snapshot URL is the lock archive date', () => {
  assert.equal(snapshotUrlFor(lockOf([pkg('a', '1')])), 'https://snapshot.debian.org/archive/debian/20260711T101637Z/');
});

test('the tools tree pins round-trip, are checked like the image\'s, and show in a diff', async () => {
  const { formatLock, parseLock, diffLocks, formatChange } = await import('../../src/lock/file.js');
  const archive = { mirror: 'http://deb.debian.org/debian', suite: 'bookworm', components: ['main'], date: 1700000000, inRelease: 'a'.repeat(64), signedBy: undefined, verified: true, indexes: [{ path: 'main/binary-amd64/Packages', sha256: 'c'.repeat(64), size: 1 }] };
  const pkg = (name: string, version: string) => ({ name, version, architecture: 'all', sha256: name.length.toString(16).padStart(64, '0'), size: 1, filename: `pool/main/${name}.deb` });
  const lock = { lock: 2, image: 'web', archive, packages: [pkg('base-files', '12')], tools: { archive: { ...archive, suite: 'trixie' }, packages: [pkg('ansible-core', '2.19.1-1')] } };
  const text = formatLock(lock);
  assert.match(text, /^tools:\n {2}archive:\n {4}mirror: "http:\/\/deb\.debian\.org\/debian"\n {4}suite: "trixie"/m);
  assert.deepEqual(parseLock(text), lock);
  assert.throws(() => parseLock(text.replace(/(tools:[\s\S]*?name: "ansible-core"[^\n]*?sha256: )"[0-9a-f]+"/, '$1"nothex"')), /tools\.packages\[0\] \(ansible-core\): sha256 must be 64 lower-case hex digits/);
  const newer = { ...lock, tools: { ...lock.tools, packages: [pkg('ansible-core', '2.19.2-1')] } };
  assert.deepEqual(diffLocks(lock, newer).map(formatChange), ['~ tools: ansible-core (all) 2.19.1-1 -> 2.19.2-1']);
});

test('a lock of an upstream (format 3): the vendor image or the parent release, round trip, diff and refusals', () => {
  const image = { url: 'https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2', sha256: 'c'.repeat(64), sha512: 'd'.repeat(128), size: 3_221_225_472 };
  const l: LockFile = { lock: LOCK_FORMAT_UPSTREAM, image: 'base', upstream: { image } };
  const text = formatLock(l);
  assert.match(text, /^upstream:\n {2}image: \{ url: "https:\/\/cloud\.debian\.org[^"]+", sha256: "c{64}", sha512: "d{128}", size: 3221225472 \}$/m);
  assert.doesNotMatch(text, /^(archive|packages):/m, 'no archive set in an upstream lock');
  assert.match(text, /not pinned here/, 'the header says what the lock does not cover');
  assert.deepEqual(parseLock(text), l);
  assert.equal(formatLock(parseLock(text)), text);

  const release = { ref: 'base@stable', name: 'base', version: 'release-1.2.0', digest: `sha256:${'e'.repeat(64)}` };
  const r: LockFile = { lock: LOCK_FORMAT_UPSTREAM, image: 'web', upstream: { release } };
  assert.deepEqual(parseLock(formatLock(r)), r);
  const moved: LockFile = { ...r, upstream: { release: { ...release, version: 'release-1.3.0', digest: `sha256:${'f'.repeat(64)}` } } };
  const changes = diffLocks(r, moved);
  assert.deepEqual(changes.map((c) => c.kind), ['upstream']);
  assert.equal(formatChange(changes[0]), `~ upstream: base@release-1.2.0 sha256:${'e'.repeat(64)} (from base@stable) -> base@release-1.3.0 sha256:${'f'.repeat(64)} (from base@stable)`);
  assert.deepEqual(diffLocks(r, r), [], 'the same pin: nothing changed');
  assert.deepEqual(diffLocks(undefined, l).map(formatChange), [`~ upstream: the Debian archive -> vendor image ${image.url} sha256:${'c'.repeat(64)}`]);

  const bad = (t: string, m: RegExp) => assert.throws(() => parseLock(t), (e: unknown) => e instanceof KilnError && m.test(e.message));
  bad(text.replace(/sha512: "d+"/, 'sha512: "abc"'), /upstream\.image\.sha512 must be 128 lower-case hex digits/);
  bad(text.replace(/sha256: "c+"/, `sha256: "${'C'.repeat(64)}"`), /upstream\.image\.sha256 must be 64 lower-case hex digits/);
  bad(text.replace(/size: \d+/, 'size: -1'), /upstream\.image\.size must be a byte count/);
  bad(formatLock(r).replace(/digest: "[^"]+"/, 'digest: "latest"'), /upstream\.release\.digest must be sha256:<64/);
  bad(formatLock(r).replace(/version: "[^"]+", /, ''), /upstream\.release\.version is missing/);
  bad(text.replace(/^upstream:\n.*$/m, 'upstream:\n  image: { url: "x", sha256: "c", sha512: "d", size: 1 }\n  release: { ref: "a@b" }'), /exactly one of image and release/);
  bad(text.replace(/^upstream:\n.*$/m, ''), /upstream: must hold image or release/);
  bad(`${text}archive: { mirror: "m", suite: "trixie", components: [main] }\n`, /archive and packages do not belong in it/);
  const archiveLock = formatLock(lockOf([pkg('zlib1g', '1:1.2.13.dfsg-1')]));
  bad(`${archiveLock}upstream: { release: { ref: "a@b" } }\n`, /only a format 3 lock pins an upstream/);
});

test('an AMI upstream also pins the image id the ec2:// url resolved to: round trip, diff, refusal', async () => {
  const image = { url: 'ec2://eu-west-1/debian-13-amd64-*', ami: 'ami-0123456789abcdef0', sha256: 'c'.repeat(64), sha512: 'd'.repeat(128), size: 2 ** 31 };
  const l: LockFile = { lock: LOCK_FORMAT_UPSTREAM, image: 'base', upstream: { image } };
  const text = formatLock(l);
  assert.match(text, /^ {2}image: \{ url: "ec2:\/\/eu-west-1\/debian-13-amd64-\*", ami: "ami-0123456789abcdef0", sha256: "c{64}",/m);
  assert.deepEqual(parseLock(text), l);
  const newer: LockFile = { ...l, upstream: { image: { ...image, ami: 'ami-0fedcba9876543210', sha256: 'f'.repeat(64) } } };
  assert.deepEqual(diffLocks(l, newer).map(formatChange), [`~ upstream: vendor image ${image.url} (ami-0123456789abcdef0) sha256:${'c'.repeat(64)} -> vendor image ${image.url} (ami-0fedcba9876543210) sha256:${'f'.repeat(64)}`]);
  assert.throws(() => parseLock(text.replace('ami: "ami-0123456789abcdef0"', 'ami: "snap-0123"')), (e: unknown) => e instanceof KilnError && /upstream\.image\.ami must be an AMI id/.test(e.message));
  const { upstreamOf } = await import('../../src/pipeline/lock-resolve.js');
  const source = { type: 'image' as const, url: image.url, sha256: image.sha256, sha512: image.sha512, size: image.size, checks: [], verified: true, format: 'raw', layout: {} as never, packages: [], baseKey: 'k', baseSha256: 'b'.repeat(64), date: 1,
    ami: { region: 'eu-west-1', imageId: image.ami, name: 'debian-13-amd64-20261101', owner: '136693071363', created: '2026-11-01T00:00:00Z' } };
  assert.deepEqual(upstreamOf(source), { image });
});

test('kiln lock pins only an image that verified: an image used with verify: false is refused, naming what to pin', async () => {
  const { upstreamOf } = await import('../../src/pipeline/lock-resolve.js');
  const image = { type: 'image' as const, url: 'https://vendor.example/d.qcow2', sha256: 'c'.repeat(64), sha512: 'd'.repeat(128), size: 10, checks: [], format: 'qcow2', layout: {} as never, packages: [], baseKey: 'k', baseSha256: 'b'.repeat(64), date: 1 };
  assert.deepEqual(upstreamOf({ ...image, verified: true }), { image: { url: image.url, sha256: image.sha256, sha512: image.sha512, size: 10 } });
  assert.throws(() => upstreamOf({ ...image, verified: false }), (e: unknown) => e instanceof KilnError && /pins only a verified image, and source\.image\.verify is false/.test(e.message) && /source\.image\.sha512/.test(e.hint ?? ''));
});
