import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { GptError, PART_TYPE, crc32, guidFromBytes, guidToBytes, parseGpt, planPartitions, sfdiskScript } from '../../src/disk/gpt.js';
import { rootCandidates } from '../../src/image/root-fs.js';
import { diskIds } from '../../src/disk/ids.js';

const MiB = 1024 * 1024;
const ids = diskIds('web@release-0.1.0');

/** CRC-32 from gzip's trailer: an implementation independent of ours. */
function refCrc(b: Buffer): number {
  const gz = gzipSync(b);
  return gz.readUInt32LE(gz.length - 8);
}

test('crc32 matches the standard check value and zlib', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 31) & 0xff));
  assert.equal(crc32(data), refCrc(data));
});

test('GUIDs are stored with the first three fields little-endian (UEFI spec appendix A)', () => {
  const b = guidToBytes(PART_TYPE.esp);
  assert.equal(b.toString('hex'), '28732ac11ff8d211ba4b00a0c93ec93b');
  assert.equal(guidFromBytes(b), PART_TYPE.esp);
});

test('the layout: BIOS boot 1 MiB at LBA 2048, 64 MiB ESP, root to 1 MiB before the end', () => {
  const p = planPartitions(2048 * MiB, ids);
  assert.deepEqual([p.bios?.startLba, p.bios?.sizeLba], [2048, 2048]);
  assert.deepEqual([p.esp.startLba, p.esp.sizeLba], [4096, 64 * 2048]);
  assert.equal(p.root.startLba, 4096 + 64 * 2048);
  assert.equal((p.root.startLba + p.root.sizeLba) * 512, 2047 * MiB);
  assert.equal(p.root.type, PART_TYPE.rootX86_64);
  assert.equal(p.root.uuid, ids.rootPartUuid);
});

test('the layout refuses sizes that are not whole MiB or too small for a root', () => {
  assert.throws(() => planPartitions(2048 * MiB + 512, ids), /whole number of MiB/);
  assert.throws(() => planPartitions(70 * MiB, ids), /at least 83 MiB/);
});

test('the sfdisk script pins label-id, every start, size, type, uuid and name', () => {
  const s = sfdiskScript(planPartitions(100 * MiB, ids));
  assert.equal(s, [
    'label: gpt',
    `label-id: ${ids.diskGuid.toUpperCase()}`,
    'unit: sectors',
    'sector-size: 512',
    'first-lba: 34',
    `last-lba: ${100 * 2048 - 34}`,
    '',
    `start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, uuid=${ids.biosPartUuid.toUpperCase()}, name="bios"`,
    `start=4096, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=${ids.espPartUuid.toUpperCase()}, name="esp"`,
    `start=135168, size=${100 * 2048 - 2048 - 135168}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=${ids.rootPartUuid.toUpperCase()}, name="root"`,
    '',
  ].join('\n'));
});

/** A GPT written field by field from the UEFI spec (section 5.3), independently of the parser. */
function gptImage(parts: { type: string; uuid: string; first: number; last: number; name: string }[]): Buffer {
  const img = Buffer.alloc(34 * 512);
  const entries = Buffer.alloc(128 * 128);
  parts.forEach((p, i) => {
    const e = entries.subarray(i * 128);
    guidToBytes(p.type).copy(e, 0);
    guidToBytes(p.uuid).copy(e, 16);
    e.writeBigUInt64LE(BigInt(p.first), 32);
    e.writeBigUInt64LE(BigInt(p.last), 40);
    e.write(p.name, 56, 'utf16le');
  });
  entries.copy(img, 1024);
  const h = img.subarray(512, 1024);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(92, 12);
  h.writeBigUInt64LE(1n, 24);
  h.writeBigUInt64LE(204799n, 32);
  h.writeBigUInt64LE(34n, 40);
  h.writeBigUInt64LE(204766n, 48);
  guidToBytes(ids.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(2n, 72);
  h.writeUInt32LE(128, 80);
  h.writeUInt32LE(128, 84);
  h.writeUInt32LE(refCrc(entries), 88);
  h.writeUInt32LE(refCrc(h.subarray(0, 92)), 16);
  return img;
}

const sample = [
  { type: PART_TYPE.biosBoot, uuid: ids.biosPartUuid, first: 2048, last: 4095, name: 'bios' },
  { type: PART_TYPE.esp, uuid: ids.espPartUuid, first: 4096, last: 135167, name: 'esp' },
  { type: PART_TYPE.rootX86_64, uuid: ids.rootPartUuid, first: 135168, last: 202751, name: 'root' },
];

test('parseGpt reads the header and the used entries', () => {
  const { header, entries } = parseGpt(gptImage(sample));
  assert.equal(header.diskGuid, ids.diskGuid.toUpperCase());
  assert.equal(header.entryCount, 128);
  assert.deepEqual(entries.map((e) => [e.index, e.type, e.uuid, e.firstLba, e.lastLba, e.name]),
    sample.map((p, i) => [i + 1, p.type, p.uuid.toUpperCase(), p.first, p.last, p.name]));
  assert.equal(rootCandidates(entries)[0]?.firstLba, 135168);
});

test('parseGpt rejects a missing signature, a corrupted header and a corrupted entry array', () => {
  assert.throws(() => parseGpt(Buffer.alloc(34 * 512)), GptError);
  const badHeader = gptImage(sample);
  badHeader[512 + 40] ^= 1;
  assert.throws(() => parseGpt(badHeader), /header checksum/);
  const badEntries = gptImage(sample);
  badEntries[1024 + 129] ^= 1;
  assert.throws(() => parseGpt(badEntries), /entry array checksum/);
  assert.throws(() => parseGpt(gptImage(sample).subarray(0, 4000)), /truncated/);
});

test('the root candidates are the x86-64 root partitions, then the Linux filesystem partitions', () => {
  const linux = sample.map((p) => (p.name === 'root' ? { ...p, type: PART_TYPE.linuxData } : p));
  assert.deepEqual(rootCandidates(parseGpt(gptImage(linux)).entries).map((e) => e.name), ['root']);
  assert.deepEqual(rootCandidates(parseGpt(gptImage(sample.slice(0, 2))).entries), []);
});
