import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { crc32c } from '../../src/formats/crc32c.js';
import { bytesToUuid, guidBytes, releaseUuid, uuidV5, vmdkCid } from '../../src/formats/ids.js';
import { METADATA_REGION_GUID, PAGE83_ITEM_GUID } from '../../src/formats/vhdx-ids.js';

test('uuidV5 matches the RFC 4122 reference (Python uuid5(NAMESPACE_DNS, "python.org"))', () => {
  assert.equal(bytesToUuid(uuidV5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'python.org')), '886313e1-3b8a-5372-9b90-0c9aee199e5d');
});

test('release UUIDs are stable per purpose, name and version, and differ otherwise', () => {
  const a = releaseUuid('vhd-unique-id', 'web', '1.0.0');
  assert.deepEqual(a, releaseUuid('vhd-unique-id', 'web', '1.0.0'));
  assert.notDeepEqual(a, releaseUuid('vhd-unique-id', 'web', '1.0.1'));
  assert.notDeepEqual(a, releaseUuid('vhd-unique-id', 'db', '1.0.0'));
  assert.notDeepEqual(a, releaseUuid('other', 'web', '1.0.0'));
  assert.equal(a[6] >> 4, 5, 'version nibble');
  assert.equal(a[8] >> 6, 2, 'RFC 4122 variant');
});

test('CRC-32C matches the Castagnoli check value', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
});

test('GUID byte order matches what qemu-img writes into VHDX region tables', () => {
  // Bytes seen at offset 0x30030 of a qemu-img 7.2 VHDX: the metadata region GUID.
  assert.equal(METADATA_REGION_GUID.toString('hex'), '06a27c8b90479a4bb8fe575f050f886e');
  assert.equal(PAGE83_ITEM_GUID.toString('hex'), 'ab12cabee6b2234593efc309e000c746');
  assert.equal(guidBytes(Buffer.from('00112233445566778899aabbccddeeff', 'hex')).toString('hex'), '33221100554477668899aabbccddeeff');
});

test('VMDK CIDs are 8 hex digits, per release, never the no-parent value', () => {
  const cid = vmdkCid('web', '1.0.0');
  assert.match(cid, /^[0-9a-f]{8}$/);
  assert.equal(cid, vmdkCid('web', '1.0.0'));
  assert.notEqual(cid, vmdkCid('web', '1.0.1'));
  assert.notEqual(cid, 'ffffffff');
});
