/**
 * The lock's chain of trust against a synthetic archive: a key made here (in a GNUPGHOME of the
 * test's own), an InRelease clearsigned with it whose SHA256 lines give a synthetic Packages index,
 * served over http on 127.0.0.1. Nothing leaves the machine.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KilnError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { indexCachePath, packagesIndex } from '../../src/lock/archive-index.js';
import { verifyLockedSet } from '../../src/lock/chain.js';
import { formatLock, LOCK_FORMAT, type LockedPackage, type LockFile, type ArchiveLockFile } from '../../src/lock/file.js';
import { resolveSet, writeLock } from '../../src/pipeline/lock-resolve.js';
import { checkFreshness, maxAgeSeconds, verifyInRelease } from '../../src/source/inrelease.js';
import type { KilnConfig } from '../../src/template/schema.js';

let base: string;
let keyring: string;
let otherKeyring: string;
let fingerprint: string;
let server: Server;
let mirror: string;
const served = new Map<string, Buffer>();
const NOW = Date.parse('2026-11-30T12:00:00Z');
const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

const PACKAGES: LockedPackage[] = [
  { name: 'hello-kiln', version: '1.0-1', architecture: 'amd64', sha256: '1'.repeat(64), size: 1234, filename: 'pool/main/h/hello-kiln/hello-kiln_1.0-1_amd64.deb' },
  { name: 'world-kiln', version: '2.0-1', architecture: 'all', sha256: '2'.repeat(64), size: 5678, filename: 'pool/main/w/world-kiln/world-kiln_2.0-1_all.deb' },
];
const INDEX = PACKAGES.map((p) => `Package: ${p.name}\nVersion: ${p.version}\nArchitecture: ${p.architecture}\nFilename: ${p.filename}\nSize: ${p.size}\nSHA256: ${p.sha256}\nDescription: test\n`).join('\n');
let indexXz: Buffer;

function gpg(home: string, args: string[], input?: string): string {
  return execFileSync('gpg', ['--homedir', home, '--batch', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'ignore'] });
}

function newKey(name: string): { home: string; keyring: string; fingerprint: string } {
  const home = mkdtempSync(join(base, 'gnupg-'));
  gpg(home, ['--quick-gen-key', `${name} <archive@kiln.invalid>`, 'ed25519', 'sign', 'never']);
  const fpr = /^fpr:+([0-9A-F]+):/m.exec(gpg(home, ['--with-colons', '--fingerprint']))![1];
  const file = join(base, `${name}.gpg`);
  execFileSync('gpg', ['--homedir', home, '--batch', '--export', '-o', file]);
  return { home, keyring: file, fingerprint: fpr };
}

let signingHome: string;

/** A clearsigned InRelease for the synthetic index, Date given, signed by the test's key. */
function inRelease(date: string, extra = ''): string {
  const xz = { sha256: sha256(indexXz), size: indexXz.length };
  const body = [
    'Origin: Kiln Test', 'Suite: bookworm', `Date: ${date}`, ...(extra ? [extra] : []), 'SHA256:',
    ` ${sha256(INDEX)} ${Buffer.byteLength(INDEX)} main/binary-amd64/Packages`,
    ` ${xz.sha256} ${xz.size} main/binary-amd64/Packages.xz`, '',
  ].join('\n');
  return gpg(signingHome, ['--clearsign', '--digest-algo', 'SHA256'], body);
}

function writeTemp(name: string, text: string): string {
  const f = join(base, name);
  writeFileSync(f, text);
  return f;
}

before(async () => {
  base = mkdtempSync(join(tmpdir(), 'kiln-lockchain-'));
  const k = newKey('Kiln Test Archive');
  signingHome = k.home;
  keyring = k.keyring;
  fingerprint = k.fingerprint;
  otherKeyring = newKey('Someone Else').keyring;
  const raw = join(base, 'Packages');
  writeFileSync(raw, INDEX);
  execFileSync('xz', ['-k', raw]);
  indexXz = readFileSync(`${raw}.xz`);
  served.set(`/dists/bookworm/main/binary-amd64/by-hash/SHA256/${sha256(indexXz)}`, indexXz);
  server = createServer((req, res) => {
    const body = served.get(req.url ?? '');
    if (!body) { res.writeHead(404); res.end(); return; }
    res.end(body);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  mirror = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

after(() => {
  server?.close();
  rmSync(base, { recursive: true, force: true });
});

test('fields come only from the text gpgv verified: a Date: line before the signed message is ignored', async () => {
  const signed = inRelease('Sat, 28 Nov 2026 10:00:00 UTC');
  const file = writeTemp('prepended-InRelease', `Date: Mon, 01 Jan 2001 00:00:00 UTC\nValid-Until: Mon, 01 Jan 2001 00:00:00 UTC\n\n${signed}SHA256:\n ${'9'.repeat(64)} 1 main/binary-amd64/Packages\n`);
  const r = await verifyInRelease(file, keyring, silentLogger);
  assert.equal(r.verified, true);
  assert.equal(r.signedBy, fingerprint);
  assert.equal(r.date, Date.parse('2026-11-28T10:00:00Z') / 1000, 'the signed Date, not the prepended one');
  assert.equal(r.validUntil, undefined, 'the prepended Valid-Until is not read either');
  assert.equal(r.hashes.get('main/binary-amd64/Packages')?.sha256, sha256(INDEX), 'the text after the signature is not read');
  assert.equal(r.inReleaseSha256, sha256(readFileSync(file)));
  assert.doesNotThrow(() => checkFreshness(r, { maxAge: '14d', now: NOW, what: 'InRelease' }));
});

test('an InRelease signed by a key outside the keyring is refused', async () => {
  const file = writeTemp('signed-InRelease', inRelease('Sat, 28 Nov 2026 10:00:00 UTC'));
  await assert.rejects(verifyInRelease(file, otherKeyring, silentLogger), (e: unknown) => e instanceof KilnError && /is not signed by a key in/.test(e.message));
  const forged = writeTemp('forged-InRelease', readFileSync(file, 'utf8').replace('Origin: Kiln Test', 'Origin: Kiln Tesd'));
  await assert.rejects(verifyInRelease(forged, keyring, silentLogger), /is not signed by a key in/);
});

test('a replayed InRelease older than the maximum age, or past its Valid-Until, is refused with a hint for snapshot builds', async () => {
  const old = await verifyInRelease(writeTemp('old-InRelease', inRelease('Sat, 11 Jul 2026 10:16:37 UTC')), keyring, silentLogger);
  assert.throws(() => checkFreshness(old, { maxAge: '14d', now: NOW, what: 'the InRelease' }),
    (e: unknown) => e instanceof KilnError && /is 142 days old \(signed Date 2026-07-11T10:16:37Z\), older than source\.debian\.max_age \(14d\)/.test(e.message)
      && /snapshot/.test(e.hint ?? '') && /not its age/.test(e.hint ?? ''));
  assert.doesNotThrow(() => checkFreshness(old, { maxAge: '365d', now: NOW, what: 'the InRelease' }));
  const expired = await verifyInRelease(writeTemp('expired-InRelease', inRelease('Sat, 28 Nov 2026 10:00:00 UTC', 'Valid-Until: Sun, 29 Nov 2026 10:00:00 UTC')), keyring, silentLogger);
  assert.throws(() => checkFreshness(expired, { maxAge: '365d', now: NOW, what: 'the InRelease' }), /expired: its signed Valid-Until is 2026-11-29T10:00:00Z/);
  assert.equal(maxAgeSeconds('2w'), 14 * 86400);
  assert.throws(() => maxAgeSeconds('14 days'), /not an age/);
});

const debian = (over: Partial<KilnConfig['source']['debian']> = {}): KilnConfig['source']['debian'] => ({
  suite: 'bookworm', mirror: 'http://127.0.0.1:9/', components: ['main'], kernel: 'k', packages: [], keyring, verify: true, max_age: '14d', ...over,
});

test('kiln lock resolves from the verified InRelease and a Packages index with its signed sha256; a stale one fails', async () => {
  const cacheDir = mkdtempSync(join(base, 'cache-'));
  const inReleaseFile = writeTemp('resolve-InRelease', inRelease('Sat, 28 Nov 2026 10:00:00 UTC'));
  // apt's copy of the index is used when it is the signed one (no download: the mirror is closed).
  const localIndex = writeTemp('apt-Packages', INDEX);
  const installed = PACKAGES.map((p) => ({ name: p.name, version: p.version, arch: p.architecture }));
  const o = { debian: debian(), mirror: 'http://127.0.0.1:9/', suite: 'bookworm', components: ['main'], inReleaseFile, localIndex: () => localIndex, cacheDir, logger: silentLogger, now: NOW };
  const set = await resolveSet(installed, o);
  assert.deepEqual(set.packages, PACKAGES);
  assert.deepEqual(set.archive.indexes, [{ path: 'main/binary-amd64/Packages', sha256: sha256(INDEX), size: Buffer.byteLength(INDEX) }]);
  assert.equal(set.archive.signedBy, fingerprint);
  assert.equal(set.archive.inRelease, sha256(readFileSync(inReleaseFile)));
  const stale = writeTemp('stale-InRelease', inRelease('Sat, 11 Jul 2026 10:16:37 UTC'));
  await assert.rejects(resolveSet(installed, { ...o, inReleaseFile: stale }), /older than source\.debian\.max_age/);
  // An apt copy that is not the signed index is not used (and the closed mirror then fails).
  const tampered = writeTemp('apt-Packages-tampered', INDEX.replace('1'.repeat(64), '3'.repeat(64)));
  await assert.rejects(resolveSet(installed, { ...o, cacheDir: mkdtempSync(join(base, 'cache-')), localIndex: () => tampered }), /no Packages index of bookworm\/main with the sha256 its signed InRelease gives/);
});

/** A template directory with kiln.lock and kiln.lock.d, as `kiln lock` writes them. */
async function lockedDir(): Promise<{ dir: string; lockFile: string; lock: ArchiveLockFile }> {
  const dir = mkdtempSync(join(base, 'template-'));
  const inReleaseFile = writeTemp(`InRelease-${Date.now()}`, inRelease('Sat, 28 Nov 2026 10:00:00 UTC'));
  const cacheDir = mkdtempSync(join(base, 'cache-'));
  const installed = PACKAGES.map((p) => ({ name: p.name, version: p.version, arch: p.architecture }));
  const set = await resolveSet(installed, { debian: debian({ mirror }), mirror, suite: 'bookworm', components: ['main'], inReleaseFile, cacheDir, logger: silentLogger, now: NOW });
  const lock: ArchiveLockFile = { lock: LOCK_FORMAT, image: 't', ...set };
  const lockFile = join(dir, 'kiln.lock');
  writeLock(lockFile, lock, [inReleaseFile]);
  return { dir, lockFile, lock };
}

test('a locked build verifies the chain from the lock\'s own data, and records what it verified', async () => {
  const { dir, lockFile, lock } = await lockedDir();
  assert.ok(existsSync(join(dir, 'kiln.lock.d', `${lock.archive.inRelease}.InRelease`)), 'the signed InRelease is kept beside kiln.lock');
  const cacheDir = mkdtempSync(join(base, 'cache-'));
  // The lock's own text claims nothing that counts: the trust comes from gpgv.
  writeFileSync(lockFile, formatLock({ ...lock, archive: { ...lock.archive, verified: false } }));
  const trust = await verifyLockedSet(lock, { lockFile, debian: debian(), cacheDir, logger: silentLogger });
  assert.deepEqual({ verified: trust.verified, signedBy: trust.signingKeyFingerprint, inRelease: trust.inReleaseSha256, date: trust.archiveDate },
    { verified: true, signedBy: fingerprint, inRelease: lock.archive.inRelease, date: Date.parse('2026-11-28T10:00:00Z') / 1000 });
  assert.ok(existsSync(indexCachePath(cacheDir, sha256(INDEX))), 'the index fetched from the lock\'s mirror is cached under its sha256');
  // A build whose keyring does not hold the archive key fails, whatever the lock says.
  await assert.rejects(verifyLockedSet(lock, { lockFile, debian: debian({ keyring: otherKeyring }), cacheDir, logger: silentLogger }), /is not signed by a key in/);
  // verify: false checks the hash chain but records the InRelease as not verified.
  const off = await verifyLockedSet(lock, { lockFile, debian: debian({ verify: false }), cacheDir, logger: silentLogger });
  assert.equal(off.verified, false);
  assert.equal(off.signingKeyFingerprint, undefined);
});

test('a kiln.lock with one changed sha256 fails, naming the package and its line', async () => {
  const { lockFile, lock } = await lockedDir();
  const changed = { ...lock, packages: lock.packages.map((p) => (p.name === 'world-kiln' ? { ...p, sha256: 'f'.repeat(64) } : p)) };
  const text = formatLock(changed);
  writeFileSync(lockFile, text);
  const line = text.split('\n').findIndex((l) => l.includes('name: "world-kiln"')) + 1;
  await assert.rejects(verifyLockedSet(changed, { lockFile, debian: debian({ snapshot: 'http://127.0.0.1:9/' }), cacheDir: mkdtempSync(join(base, 'cache-')), logger: silentLogger }),
    (e: unknown) => e instanceof KilnError && /^world-kiln 2\.0-1 \(all\): sha256 f{64} is not the 2{64} the signed Packages index of bookworm gives$/.test(e.message)
      && e.where.file === lockFile && e.where.line === line);
  // An InRelease swapped for another validly signed one is not the one kiln.lock names.
  const other = writeTemp('other-InRelease', inRelease('Sun, 29 Nov 2026 10:00:00 UTC'));
  writeFileSync(join(lockFile, '..', 'kiln.lock.d', `${lock.archive.inRelease}.InRelease`), readFileSync(other));
  await assert.rejects(verifyLockedSet(lock, { lockFile, debian: debian(), cacheDir: mkdtempSync(join(base, 'cache-')), logger: silentLogger }), /is not the InRelease kiln\.lock names/);
});

test('a cached Packages index truncated by one byte is a miss: discarded and fetched again', async () => {
  const release = await verifyInRelease(writeTemp('cache-InRelease', inRelease('Sat, 28 Nov 2026 10:00:00 UTC')), keyring, silentLogger);
  const cacheDir = mkdtempSync(join(base, 'cache-'));
  const warnings: string[] = [];
  const logger = { ...silentLogger, warn: (m: string) => warnings.push(m) };
  const first = await packagesIndex(release, 'main', { cacheDir, suite: 'bookworm', mirrors: [mirror], logger });
  assert.equal(first.text, INDEX);
  const file = indexCachePath(cacheDir, sha256(INDEX));
  truncateSync(file, statSync(file).size - 1);
  const again = await packagesIndex(release, 'main', { cacheDir, suite: 'bookworm', mirrors: [mirror], logger });
  assert.equal(again.text, INDEX);
  assert.equal(readFileSync(file, 'utf8'), INDEX, 'the cache holds the signed index again');
  assert.match(warnings.join('\n'), /cached Packages index .* is not the signed one/);
  // Same length, other bytes: a miss as well.
  writeFileSync(file, INDEX.replace('test', 'tesd'));
  assert.equal((await packagesIndex(release, 'main', { cacheDir, suite: 'bookworm', mirrors: [mirror], logger })).text, INDEX);
});
