import { strict as assert } from 'node:assert';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseKeyValues, releaseFile, stampOsRelease, stampTree } from '../../src/image/stamp.js';

const debian = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n';

test('os-release gains IMAGE_ID and IMAGE_VERSION, replacing earlier ones', () => {
  const once = stampOsRelease(debian, { name: 'web', version: 'release-0.1.0' });
  const twice = stampOsRelease(once, { name: 'web', version: 'release-0.2.0' });
  const kv = parseKeyValues(twice).values;
  assert.equal(kv.IMAGE_ID, 'web');
  assert.equal(kv.IMAGE_VERSION, 'release-0.2.0');
  assert.equal(kv.ID, 'debian');
  assert.equal(twice.match(/IMAGE_VERSION/g)?.length, 1);
});

test('/etc/release carries name, version, commit and build kind', () => {
  const kv = parseKeyValues(releaseFile({ name: 'web', version: 'release-0.1.0', commit: 'abc', snapshot: false, sourceDateEpoch: 5 })).values;
  assert.deepEqual(kv, { IMAGE_ID: 'web', IMAGE_VERSION: 'release-0.1.0', IMAGE_COMMIT: 'abc', IMAGE_BUILD: 'release', IMAGE_SOURCE_DATE_EPOCH: '5' });
});

test('stamping a tree replaces the os-release symlink without following it out of the tree', () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-stamp-'));
  mkdirSync(join(root, 'etc'));
  mkdirSync(join(root, 'usr/lib'), { recursive: true });
  writeFileSync(join(root, 'usr/lib/os-release'), debian);
  // An absolute link would point at the build host's file if followed.
  symlinkSync('/usr/lib/os-release', join(root, 'etc/os-release'));
  stampTree(root, { name: 'web', version: 'release-0.1.0', commit: 'c0ffee', snapshot: true, sourceDateEpoch: 1 });
  assert.ok(lstatSync(join(root, 'etc/os-release')).isFile());
  const kv = parseKeyValues(readFileSync(join(root, 'etc/os-release'), 'utf8')).values;
  assert.equal(kv.PRETTY_NAME, 'Debian GNU/Linux 12 (bookworm)');
  assert.equal(kv.IMAGE_VERSION, 'release-0.1.0');
  assert.equal(parseKeyValues(readFileSync(join(root, 'etc/release'), 'utf8')).values.IMAGE_BUILD, 'snapshot');
  assert.equal(readFileSync(join(root, 'usr/lib/os-release'), 'utf8'), debian, 'the vendor file is untouched');
});
