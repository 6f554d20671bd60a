/**
 * The base tree cache: built in the cache's own directory (so KILN_CACHE_DIR may be on another
 * filesystem), recorded with its sha256 and size, and checked on every use: a damaged entry is
 * discarded with a warning and built again. mmdebstrap is a fake that writes a small tar.
 */
import { strict as assert } from 'node:assert';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { commitEntry, entryTemp, intactEntry, listFileEntries } from '../../src/cache-entry.js';
import { StepCache } from '../../src/pipeline/step-cache.js';
import { silentLogger } from '../../src/log.js';
import { baseTarball } from '../../src/source/debian.js';
import type { KilnConfig } from '../../src/template/schema.js';
import { requireOnHost } from './host-requirements.js';

let base: string;
let fakeBin: string;
let calls: string;
const savedPath = process.env.PATH;

before(() => {
  base = mkdtempSync(join(tmpdir(), 'kiln-cache-entry-'));
  fakeBin = join(base, 'bin');
  calls = join(base, 'mmdebstrap-calls');
  const tree = join(base, 'tree');
  mkdirSync(join(tree, 'etc'), { recursive: true });
  writeFileSync(join(tree, 'etc', 'os-release'), 'ID=debian\n'.repeat(2000));
  mkdirSync(fakeBin);
  // The output is mmdebstrap's second-to-last argument.
  writeFileSync(join(fakeBin, 'mmdebstrap'), `#!/bin/sh\nn=$(($# - 1)); eval "out=\\\${$n}"\necho "$out" >> '${calls}'\nexec tar -cf "$out" -C '${tree}' .\n`);
  chmodSync(join(fakeBin, 'mmdebstrap'), 0o755);
  process.env.PATH = `${fakeBin}:${savedPath}`;
});

after(() => {
  process.env.PATH = savedPath;
  rmSync(base, { recursive: true, force: true });
});

const debian = {
  mirror: 'http://deb.debian.org/debian', suite: 'bookworm', components: ['main'], kernel: 'linux-image-amd64', packages: [],
  verify: false, keyring: '/usr/share/keyrings/debian-archive-keyring.gpg',
} as unknown as KilnConfig['source']['debian'];
const trust = { verified: false, inReleaseSha256: '0'.repeat(64), archiveDate: 1700000000 };

function capture() {
  const warnings: string[] = [];
  return { warnings, logger: { ...silentLogger, warn: (m: string) => { warnings.push(m); } } };
}

test('KILN_CACHE_DIR on another filesystem than the work area: the base tar is built and cached', async () => {
  requireOnHost('/dev/shm', 'the tmpfs these tests use as a second filesystem', 'mount a tmpfs there (systemd and Docker hosts have one)');
  const work = mkdtempSync('/dev/shm/kiln-work-');
  const cache = mkdtempSync(join('/var/tmp', 'kiln-cache-'));
  try {
    assert.notEqual(statSync(work).dev, statSync(cache).dev);
    const first = await baseTarball(debian, trust, cache, work, silentLogger);
    assert.equal(first.cached, false);
    assert.ok(first.tar.startsWith(join(cache, 'base')));
    const rec = JSON.parse(readFileSync(join(cache, 'base', `${first.key}.json`), 'utf8')) as { sha256: string; size: number };
    assert.equal(rec.size, statSync(first.tar).size);
    assert.match(rec.sha256, /^[0-9a-f]{64}$/);
    const second = await baseTarball(debian, trust, cache, work, silentLogger);
    assert.equal(second.cached, true);
    assert.deepEqual(readdirSync(join(cache, 'base')).sort(), [`${first.key}.json`, `${first.key}.tar`]);
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(cache, { recursive: true, force: true });
  }
});

test('a truncated cached base tar is detected on use, discarded with a warning and built again', async () => {
  const cache = join(base, 'cache-truncated');
  const work = join(base, 'work');
  mkdirSync(work, { recursive: true });
  const first = await baseTarball(debian, trust, cache, work, silentLogger);
  truncateSync(first.tar, statSync(first.tar).size - 512);
  const before = readFileSync(calls, 'utf8').split('\n').length;
  const { warnings, logger } = capture();
  const again = await baseTarball(debian, trust, cache, work, logger);
  assert.equal(again.cached, false, 'rebuilt, not used');
  assert.equal(readFileSync(calls, 'utf8').split('\n').length, before + 1, 'mmdebstrap ran again');
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /cached .*\.tar is damaged \(it is \d+ bytes, its record says \d+\): discarded, building it again/);
  assert.equal((await baseTarball(debian, trust, cache, work, silentLogger)).cached, true);
});

test('a cache entry whose bytes changed, or with no recorded digest, or no record, is discarded', async () => {
  const dir = join(base, 'entries');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'k.tar');
  const record = join(dir, 'k.json');
  const make = async () => {
    writeFileSync(entryTemp(file), 'a tar, in spirit');
    return commitEntry(entryTemp(file), file, record, { created: 'now' });
  };
  const { warnings, logger } = capture();
  await make();
  assert.equal(await intactEntry(file, record, logger), true);
  writeFileSync(file, 'a tar, in spiriT');
  assert.equal(await intactEntry(file, record, logger), false);
  assert.equal(existsSync(file) || existsSync(record), false, 'both removed');
  await make();
  writeFileSync(record, JSON.stringify({ created: 'by an older Kiln' }));
  assert.equal(await intactEntry(file, record, logger), false);
  await make();
  rmSync(record);
  assert.equal(await intactEntry(file, record, logger), false);
  assert.equal(existsSync(file), false);
  assert.match(warnings[0], /its sha256 is [0-9a-f]{64}, its record says [0-9a-f]{64}/);
  assert.match(warnings[1], /no sha256 and size \(written by an older Kiln\)/);
  assert.match(warnings[2], /record .* is missing or unreadable/);
});

test('the limit counts base trees, upstream disks and lock indexes with the step entries: prune removes the least recently used of all, a use renews an entry', async () => {
  const cacheDir = mkdtempSync(join(base, 'bounded-'));
  const key = (c: string) => c.repeat(64);
  const made: { dir: string; ext: string; c: string; day: number }[] = [
    { dir: 'base', ext: 'tar', c: 'a', day: 1 }, { dir: 'images', ext: 'img', c: 'b', day: 2 },
    { dir: 'base', ext: 'tar', c: 'c', day: 3 }, { dir: 'lock-index', ext: 'Packages', c: 'd', day: 4 },
  ];
  for (const m of made) {
    mkdirSync(join(cacheDir, m.dir), { recursive: true });
    const file = join(cacheDir, m.dir, `${key(m.c)}.${m.ext}`);
    const tmp = entryTemp(file);
    writeFileSync(tmp, m.c.repeat(64 * 1024));
    await commitEntry(tmp, file, join(cacheDir, m.dir, `${key(m.c)}.json`), { created: `2026-01-0${m.day}T00:00:00.000Z`, url: `https://example.org/${m.c}` });
    const t = new Date(Date.UTC(2026, 0, m.day));
    utimesSync(join(cacheDir, m.dir, `${key(m.c)}.json`), t, t);
  }
  // A step entry used on day 5 (the newest).
  const steps = new StepCache(cacheDir, silentLogger);
  mkdirSync(join(cacheDir, 'in'));
  writeFileSync(join(cacheDir, 'in', 'out.bin'), 'e'.repeat(64 * 1024));
  await steps.put('provision', key('e'), {}, {}, [{ name: 'out.bin', from: join(cacheDir, 'in', 'out.bin') }]);
  const listed = listFileEntries(cacheDir);
  assert.deepEqual(listed.map((e) => [e.kind, e.key[0]]), [['lock index', 'd'], ['base tree', 'c'], ['upstream disk', 'b'], ['base tree', 'a']]);
  assert.equal(listed[0].inputs.url, 'https://example.org/d');
  assert.ok(listed.every((e) => e.bytes >= 64 * 1024));
  // Using the oldest (a) makes it the newest file entry: intactEntry renews its record's mtime.
  assert.equal(await intactEntry(join(cacheDir, 'base', `${key('a')}.tar`), join(cacheDir, 'base', `${key('a')}.json`), silentLogger), true);
  assert.equal(listFileEntries(cacheDir)[0].key, key('a'));
  const all = steps.listAll();
  assert.equal(all.length, 5);
  const total = all.reduce((s, e) => s + e.bytes, 0);
  // Room for all but the two least recently used: b (day 2) and c (day 3) go, a (just used), d and the step entry stay.
  const sizeOf = (c: string) => all.find((e) => e.key === key(c))!.bytes;
  const r = steps.prune(total - sizeOf('b') - sizeOf('c'));
  assert.deepEqual(r.removed.map((e) => e.key[0]).sort(), ['b', 'c']);
  assert.equal(existsSync(join(cacheDir, 'images', `${key('b')}.img`)), false);
  assert.equal(existsSync(join(cacheDir, 'images', `${key('b')}.json`)), false);
  assert.equal(existsSync(join(cacheDir, 'base', `${key('c')}.tar`)), false);
  assert.equal(existsSync(join(cacheDir, 'base', `${key('a')}.tar`)), true);
  assert.deepEqual(steps.listAll().map((e) => e.key[0]).sort(), ['a', 'd', 'e']);
  steps.prune(0);
  assert.deepEqual(steps.listAll(), []);
});
