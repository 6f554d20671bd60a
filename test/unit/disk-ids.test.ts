import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { derivedUuid, diskIds, fatSerialForFstab } from '../../src/disk/ids.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('disk ids are UUID-shaped (version 8, RFC variant) and the FAT serial is 8 hex digits', () => {
  const ids = diskIds('web@release-0.1.0');
  for (const [k, v] of Object.entries(ids)) {
    if (k === 'espSerial') assert.match(v, /^[0-9A-F]{8}$/);
    else assert.match(v, UUID, k);
  }
});

test('the same seed gives the same ids, another seed gives other ids', () => {
  assert.deepEqual(diskIds('web@release-0.1.0'), diskIds('web@release-0.1.0'));
  const a = diskIds('web@release-0.1.0');
  const b = diskIds('web@release-0.1.1');
  for (const k of Object.keys(a) as (keyof typeof a)[]) assert.notEqual(a[k], b[k], k);
});

test('every id on one disk is distinct', () => {
  const values = Object.values(diskIds('web@release-0.1.0'));
  assert.equal(new Set(values).size, values.length);
});

test('a derived uuid is the first 16 bytes of sha256 with the version and variant bits set', () => {
  const h = createHash('sha256').update('kiln-disk-id\0ext4-root-uuid\0web@1').digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  assert.equal(derivedUuid('web@1', 'ext4-root-uuid').replace(/-/g, ''), h.subarray(0, 16).toString('hex'));
});

test('ids are stable across Kiln versions (changing them breaks rebuilds of old releases)', () => {
  const ids = diskIds('web@release-0.1.0');
  assert.equal(ids.rootFsUuid, '5752bf14-65ed-8e6b-a64f-5aeef5962c66');
  assert.equal(ids.diskGuid, '82dcd204-e824-80a2-b304-b4b9b7182d81');
  assert.equal(ids.espSerial, 'EAB05202');
});

test('the FAT serial is shown as fstab and blkid write it', () => {
  assert.equal(fatSerialForFstab('1234ABCD'), '1234-ABCD');
});

test('an empty seed is refused', () => {
  assert.throws(() => diskIds(''), /seed/);
});
