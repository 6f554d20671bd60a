import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KilnError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { debPath, fetchLockedDebs } from '../../src/lock/fetch.js';
import type { LockedPackage, ArchiveLockFile } from '../../src/lock/file.js';
import { lockedPackagesIndex, serveLockedRepo } from '../../src/lock/repo.js';
import { parsePackagesIndex } from '../../src/lock/packages-index.js';

let base: string;
let mirrorUrl: string;
let closeMirror: () => void;
const pkgs: LockedPackage[] = [];

/** A real (tiny) .deb, as dpkg-deb builds it. */
function makeDeb(dir: string, name: string, version: string): LockedPackage {
  const src = join(base, 'src', name);
  mkdirSync(join(src, 'DEBIAN'), { recursive: true });
  mkdirSync(join(src, 'usr/share/doc', name), { recursive: true });
  writeFileSync(join(src, 'usr/share/doc', name, 'README'), `${name} ${version}\n`);
  writeFileSync(join(src, 'DEBIAN/control'), `Package: ${name}\nVersion: ${version}\nArchitecture: all\nMaintainer: Kiln <kiln@example.org>\nPriority: optional\nDescription: test package ${name}\n`);
  const filename = `pool/main/${name[0]}/${name}/${name}_${version}_all.deb`;
  const out = join(dir, filename);
  mkdirSync(join(out, '..'), { recursive: true });
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', src, out], { stdio: 'ignore', env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' } });
  const bytes = readFileSync(out);
  return { name, version, architecture: 'all', sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, filename };
}

const lockOf = (packages: LockedPackage[]): ArchiveLockFile => ({
  lock: 1, image: 't', archive: { mirror: mirrorUrl, suite: 'bookworm', components: ['main'], date: 1783764997, inRelease: '0'.repeat(64), verified: true, indexes: [] }, packages,
});

before(async () => {
  base = mkdtempSync(join(tmpdir(), 'kiln-lockfetch-'));
  const all = join(base, 'all');
  pkgs.push(makeDeb(all, 'hello-kiln', '1.0-1'), makeDeb(all, 'world-kiln', '2.0-1'));
  // The mirror moved on: it has hello-kiln but no longer world-kiln 2.0-1.
  const mirror = join(base, 'mirror');
  mkdirSync(join(mirror, 'pool/main/h/hello-kiln'), { recursive: true });
  writeFileSync(join(mirror, pkgs[0].filename), readFileSync(join(all, pkgs[0].filename)));
  const server = createServer((req, res) => {
    const f = join(mirror, decodeURIComponent(req.url ?? '/'));
    if (!f.startsWith(mirror) || !existsSync(f) || statSync(f).isDirectory()) { res.writeHead(404); res.end(); return; }
    res.end(readFileSync(f));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  mirrorUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  closeMirror = () => server.close();
});

after(() => {
  closeMirror?.();
  rmSync(base, { recursive: true, force: true });
});

test('a locked version the mirror no longer has is a clear error naming it and the snapshot setting', async () => {
  const cache = join(base, 'cache1');
  await assert.rejects(fetchLockedDebs(lockOf(pkgs), { cacheDir: cache, mirror: mirrorUrl, logger: silentLogger }), (e: unknown) => {
    assert.ok(e instanceof KilnError);
    assert.match(e.message, /the mirror no longer has the locked version: world-kiln 2\.0-1/);
    assert.match(e.hint ?? '', /source\.debian\.snapshot/);
    assert.match(e.hint ?? '', /snapshot\.debian\.org\/archive\/debian\/20260711T101637Z/);
    return true;
  });
  assert.ok(existsSync(debPath(cache, pkgs[0])), 'what the mirror has is cached');
  assert.ok(!existsSync(debPath(cache, pkgs[1])));
});

test('the snapshot mirror supplies what the mirror lost; every file is checked against the lock', async () => {
  const cache = join(base, 'cache2');
  const snap = `file://${join(base, 'all')}`;
  const r = await fetchLockedDebs(lockOf(pkgs), { cacheDir: cache, mirror: mirrorUrl, snapshot: snap, logger: silentLogger });
  assert.deepEqual(r.fromSnapshot, ['world-kiln 2.0-1']);
  assert.equal(r.fromMirror, 1);
  for (const p of pkgs) assert.equal(createHash('sha256').update(readFileSync(debPath(cache, p))).digest('hex'), p.sha256);
  const again = await fetchLockedDebs(lockOf(pkgs), { cacheDir: cache, mirror: mirrorUrl, logger: silentLogger });
  assert.equal(again.cached, 2, 'the second time everything comes from the cache');
});

test('a .deb whose sha256 is not the locked one is refused', async () => {
  const cache = join(base, 'cache3');
  const forged = { ...pkgs[0], sha256: 'f'.repeat(64) };
  await assert.rejects(fetchLockedDebs(lockOf([forged]), { cacheDir: cache, mirror: mirrorUrl, logger: silentLogger }), /no longer has the locked version: hello-kiln 1\.0-1/);
  assert.ok(!existsSync(debPath(cache, forged)));
});

test('the local repository serves exactly the locked .debs with a matching index', async () => {
  const cache = join(base, 'cache2');
  const lock = lockOf(pkgs);
  const index = await lockedPackagesIndex(lock, cache);
  const parsed = parsePackagesIndex(index);
  assert.deepEqual([...parsed.keys()].sort(), ['hello-kiln:all=1.0-1', 'world-kiln:all=2.0-1']);
  const repo = await serveLockedRepo(lock, cache, index, join(base, 'repo-files'));
  try {
    assert.match(repo.sourcesLine, /^deb \[trusted=yes\] http:\/\/127\.0\.0\.1:\d+\/ \.\/$/);
    assert.equal(await (await fetch(`${repo.url}Packages`)).text(), index);
    const rel = await (await fetch(`${repo.url}Release`)).text();
    assert.ok(rel.includes(createHash('sha256').update(index).digest('hex')));
    const e = parsed.get('world-kiln:all=2.0-1')!;
    const deb = Buffer.from(await (await fetch(`${repo.url}${e.filename}`)).arrayBuffer());
    assert.equal(createHash('sha256').update(deb).digest('hex'), pkgs[1].sha256);
    assert.equal((await fetch(`${repo.url}debs/${'0'.repeat(64)}.deb`)).status, 404);
    assert.equal((await fetch(`${repo.url}InRelease`)).status, 404);
  } finally {
    await repo.close();
  }
});

test("the locked set's cached index cut short by one byte is a miss and is made again", async () => {
  const cache = join(base, 'cache2');
  const lock = lockOf(pkgs);
  const index = await lockedPackagesIndex(lock, cache);
  const file = readdirSync(join(cache, 'lock-index')).find((n) => n.endsWith('.Packages'))!;
  const path = join(cache, 'lock-index', file);
  truncateSync(path, statSync(path).size - 1);
  const warnings: string[] = [];
  assert.equal(await lockedPackagesIndex(lock, cache, { ...silentLogger, warn: (m: string) => { warnings.push(m); } }), index);
  assert.equal(readFileSync(path, 'utf8'), index);
  assert.match(warnings.join('\n'), /is damaged \(it is \d+ bytes, its record says \d+\)/);
});

test('the local repository answers 404 for a .deb deleted from the cache and keeps serving', async () => {
  const cache = join(base, 'cache-deleted');
  const lock = lockOf([pkgs[0]]);
  mkdirSync(join(cache, 'debs'), { recursive: true });
  writeFileSync(debPath(cache, pkgs[0]), readFileSync(join(base, 'all', pkgs[0].filename)));
  const index = await lockedPackagesIndex(lock, cache);
  const repo = await serveLockedRepo(lock, cache, index, join(base, 'repo-deleted'));
  try {
    const url = `${repo.url}debs/${pkgs[0].sha256}.deb`;
    assert.equal((await fetch(url)).status, 200);
    rmSync(debPath(cache, pkgs[0]));
    assert.equal((await fetch(url)).status, 404);
    assert.equal((await fetch(url, { method: 'HEAD' })).status, 404);
    assert.equal(await (await fetch(`${repo.url}Packages`)).text(), index, 'the server is still up');
  } finally {
    await repo.close();
  }
});

test('a cached .deb cut short or changed is detected on use, discarded with a warning, and downloaded again', async () => {
  const cache = join(base, 'cache-damaged');
  const good = readFileSync(join(base, 'all', pkgs[0].filename));
  mkdirSync(join(cache, 'debs'), { recursive: true });
  const warnings: string[] = [];
  const logger = { ...silentLogger, warn: (m: string) => { warnings.push(m); } };
  for (const damaged of [good.subarray(0, good.length - 100), good.subarray(0, good.length - 1), Buffer.concat([good.subarray(0, 10), Buffer.from('X'), good.subarray(11)])]) {
    writeFileSync(debPath(cache, pkgs[0]), damaged);
    const r = await fetchLockedDebs(lockOf([pkgs[0]]), { cacheDir: cache, mirror: mirrorUrl, logger });
    assert.deepEqual([r.cached, r.fromMirror], [0, 1]);
    assert.deepEqual(readFileSync(debPath(cache, pkgs[0])), good);
  }
  assert.equal(warnings.length, 3);
  assert.match(warnings[0], /cached hello-kiln 1\.0-1 .* is damaged \(\d+ bytes, the lock says \d+\): discarded, downloading it again/);
  assert.match(warnings[1], /is damaged \(\d+ bytes, the lock says \d+\)/, 'one byte short');
  assert.match(warnings[2], /is damaged \(sha256 [0-9a-f]{64}\)/);
});
