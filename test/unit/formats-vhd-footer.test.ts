import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { releaseUuid } from '../../src/formats/ids.js';
import { buildFixedVhdFooter, MIB, parseVhdFooter, roundUpToMiB, vhdChecksum, vhdTimestamp } from '../../src/formats/vhd-footer.js';

const SDE = 1700000000;
const uid = releaseUuid('vhd-unique-id', 'web', '1.2.3');
const footer = buildFixedVhdFooter({ size: 2048 * MIB, sourceDateEpoch: SDE, uniqueId: uid });

test('the footer is 512 bytes with every field where the VHD specification puts it (big-endian)', () => {
  assert.equal(footer.length, 512);
  assert.equal(footer.toString('latin1', 0, 8), 'conectix', 'cookie at 0');
  assert.equal(footer.readUInt32BE(8), 0x00000002, 'features at 8: reserved bit set');
  assert.equal(footer.readUInt32BE(12), 0x00010000, 'file format version 1.0 at 12');
  assert.equal(footer.readBigUInt64BE(16), 0xffffffffffffffffn, 'data offset at 16: none for fixed disks');
  assert.equal(footer.readUInt32BE(24), SDE - 946684800, 'timestamp at 24: seconds since 2000-01-01');
  assert.equal(footer.toString('latin1', 28, 32), 'qem2', 'creator application at 28');
  assert.equal(footer.readUInt32BE(32), 0x00050003, 'creator version at 32');
  assert.equal(footer.toString('latin1', 36, 40), 'Wi2k', 'creator host OS at 36');
  assert.equal(footer.readBigUInt64BE(40), BigInt(2048 * MIB), 'original size at 40');
  assert.equal(footer.readBigUInt64BE(48), BigInt(2048 * MIB), 'current size at 48');
  assert.deepEqual([footer.readUInt16BE(56), footer[58], footer[59]], [65535, 16, 255], 'geometry at 56');
  assert.equal(footer.readUInt32BE(60), 2, 'disk type at 60: fixed');
  assert.deepEqual(footer.subarray(68, 84), uid, 'unique id at 68');
  assert.equal(footer[84], 0, 'saved state at 84');
  assert.ok(footer.subarray(85).every((b) => b === 0), 'reserved 427 bytes are zero');
});

test('the checksum at 64 is the one\'s complement of the byte sum without the checksum field', () => {
  let sum = 0;
  for (let i = 0; i < 512; i++) if (i < 64 || i > 67) sum += footer[i];
  assert.equal(footer.readUInt32BE(64), (~sum) >>> 0);
  assert.equal(vhdChecksum(footer), footer.readUInt32BE(64));
});

test('parseVhdFooter reads back every field and detects a corrupted footer', () => {
  const f = parseVhdFooter(footer);
  assert.equal(f.cookie, 'conectix');
  assert.equal(f.diskType, 2);
  assert.equal(f.currentSize, BigInt(2048 * MIB));
  assert.equal(f.timestamp, vhdTimestamp(SDE));
  assert.equal(f.creatorHostOs, 'Wi2k');
  assert.deepEqual(f.geometry, { cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  assert.deepEqual(f.uniqueId, uid);
  assert.ok(f.checksumValid && f.reservedZero);
  const bad = Buffer.from(footer);
  bad[45] ^= 1;
  assert.equal(parseVhdFooter(bad).checksumValid, false);
  assert.throws(() => parseVhdFooter(footer.subarray(1)));
});

test('the same inputs give the same footer; another SOURCE_DATE_EPOCH changes only time stamp and checksum', () => {
  assert.deepEqual(buildFixedVhdFooter({ size: 2048 * MIB, sourceDateEpoch: SDE, uniqueId: uid }), footer);
  const other = buildFixedVhdFooter({ size: 2048 * MIB, sourceDateEpoch: SDE + 1, uniqueId: uid });
  const diff = [...other.keys()].filter((i) => other[i] !== footer[i]);
  assert.ok(diff.length > 0 && diff.every((i) => (i >= 24 && i < 28) || (i >= 64 && i < 68)), `differing bytes ${diff}`);
});

test('Azure sizes: virtual size rounds up to a whole MiB, and only whole MiB are accepted', () => {
  assert.equal(roundUpToMiB(48 * MIB), 48 * MIB);
  assert.equal(roundUpToMiB(48 * MIB + 1), 49 * MIB);
  assert.equal(roundUpToMiB(1), MIB);
  assert.throws(() => buildFixedVhdFooter({ size: 48 * MIB + 512, sourceDateEpoch: SDE, uniqueId: uid }), /whole number of MiB/);
  assert.equal(vhdTimestamp(0), 0, 'before 2000 clamps to the VHD epoch');
});
