/**
 * The base tree cache: built in the cache's own directory (so KILN_CACHE_DIR may be on another
 * filesystem), recorded with its sha256 and size, and checked on every use: a damaged entry is
 * discarded with a warning and built again. mmdebstrap is a fake that writes a small tar.
 */
import { strict as assert } from 'node:assert';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { commitEntry, entryTemp, intactEntry } from '../../src/cache-entry.js';
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
