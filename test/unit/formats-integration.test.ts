// Writes every format twice from a small synthetic GPT disk and checks each artifact against the
// raw it came from, with qemu-img and GNU tar as independent readers.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, statSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { before, test } from 'node:test';
import {
  artifactFileName, extractOvaDisk, listOva, parseManifest, parseVhdFooter, readOvaMember, validateOvf, writeFormats, type Artifact, type FormatInput,
} from '../../src/formats/index.js';
import { crc32c } from '../../src/formats/crc32c.js';
import { planVhdxPatches } from '../../src/formats/vhdx-ids.js';
import { guidBytes, vmdkCid, releaseUuid } from '../../src/formats/ids.js';
import { parseVmdkDescriptor, parseVmdkHeader } from '../../src/formats/vmdk-descriptor.js';
import { FORMATS } from '../../src/template/schema.js';

const MIB = 1024 * 1024;
const RAW_SIZE = 48 * MIB + 96 * 1024; // not a whole MiB: the VHD must round it up
const SDE = 1700000000;
const NAME = 'web';
const VERSION = '1.4.0';

function sh(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { input, maxBuffer: 256 * MIB });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr?.toString()}`);
  return r.stdout.toString();
}
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const shaFile = (p: string) => sha(readFileSync(p));

let work: string;
let raw: string;
let rawSha: string;
let a: Artifact[];
let b: Artifact[];
const art = (f: string) => a.find((x) => x.format === f) as Artifact;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'kiln-formats-'));
  raw = join(work, 'disk.raw');
  truncateSync(sh('sh', ['-c', `: > ${raw} && echo ${raw}`]).trim(), RAW_SIZE);
  sh('sfdisk', ['-q', raw], [
    'label: gpt', 'label-id: 0B6E2B86-3D5A-4C1E-9F0A-6C1D2E3F4A5B',
    'start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, uuid=5D1C1A6E-0000-4000-8000-000000000001',
    'start=4096, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5D1C1A6E-0000-4000-8000-000000000002', '',
  ].join('\n'));
  const fd = openSync(raw, 'r+');
  writeSync(fd, randomBytes(3 * MIB), 0, 3 * MIB, 2 * MIB); // incompressible data
  writeSync(fd, Buffer.alloc(256 * 1024, 'kiln '), 0, 256 * 1024, 20 * MIB); // compressible data
  writeSync(fd, randomBytes(MIB), 0, MIB, 40 * MIB); // more data after a large hole
  closeSync(fd);
  rawSha = shaFile(raw);
  const input = (outDir: string): FormatInput => ({
    raw, outDir, name: NAME, version: VERSION, sourceDateEpoch: SDE, firmware: ['uefi'], cpus: 2, memoryMiB: 1024,
    description: 'test image', qcow2Compress: true,
  });
  a = await writeFormats([...FORMATS], input(join(work, 'a')));
  // b also hands each format to onWritten as soon as it is final (the release store copies it then): hashed there, it must be the artifact.
  b = await writeFormats([...FORMATS], { ...input(join(work, 'b')), onWritten: async (f, file) => { seen.push([f, shaFile(file)]); } });
});
const seen: [string, string][] = [];

test('onWritten gets every format once, while its file is final, before writeFormats returns', () => {
  assert.deepEqual(seen.map(([f]) => f).sort(), [...FORMATS].sort());
  for (const [f, digest] of seen) assert.equal(digest, b.find((x) => x.format === f)?.sha256, `${f}: the file onWritten saw is the artifact`);
});

test('every format is written, named <name>-<version>, with its real size and sha256', () => {
  assert.deepEqual(a.map((x) => x.format), [...FORMATS]);
  for (const x of a) {
    assert.equal(x.file, join(work, 'a', artifactFileName(NAME, VERSION, x.format)));
    assert.equal(x.size, statSync(x.file).size, x.format);
    assert.equal(x.sha256, shaFile(x.file), x.format);
    assert.match(x.mediaType, /^application\//);
  }
  assert.deepEqual(readdirSync(join(work, 'a')).filter((f) => f.startsWith('.')), [], 'no staging directory left behind');
});

test('the same raw gives byte-identical artifacts in another directory', () => {
  for (const x of a) {
    const y = b.find((z) => z.format === x.format) as Artifact;
    assert.notEqual(x.file, y.file);
    assert.equal(shaFile(y.file), shaFile(x.file), `${x.format} differs between two runs`);
  }
});

test('zero regions stay sparse: the VHD allocates about what the raw holds', () => {
  const allocated = (f: string) => statSync(f).blocks * 512;
  assert.ok(allocated(raw) < 8 * MIB, `the synthetic raw is sparse (${allocated(raw)})`);
  assert.ok(allocated(art('vhd').file) <= allocated(raw) + MIB, `vhd allocates ${allocated(art('vhd').file)} bytes`);
  for (const f of ['qcow2', 'vmdk', 'vhdx']) assert.ok(allocated(art(f).file) < 16 * MIB, `${f} allocates ${allocated(art(f).file)} bytes`);
});

test('raw is the input disk itself', () => {
  assert.equal(art('raw').sha256, rawSha);
  assert.equal(art('raw').size, RAW_SIZE);
});

test('every disk format converts back to the original raw content (qemu-img compare)', () => {
  for (const [f, fmt] of [['qcow2', 'qcow2'], ['vmdk', 'vmdk'], ['vhdx', 'vhdx'], ['vhd', 'vpc']]) {
    const out = sh('qemu-img', ['compare', '-f', 'raw', '-F', fmt, raw, art(f).file]);
    assert.match(out, /Images are identical/, f);
  }
  const back = join(work, 'back-vhdx.raw');
  sh('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', art('vhdx').file, back]);
  assert.equal(shaFile(back), rawSha);
  sh('qemu-img', ['check', '-f', 'vhdx', art('vhdx').file]);
  sh('qemu-img', ['check', '-f', 'qcow2', art('qcow2').file]);
});

test('VHDX headers carry derived GUIDs, sequence numbers from 1 and valid CRC-32C checksums', () => {
  const file = readFileSync(art('vhdx').file);
  const seqs: bigint[] = [];
  for (const off of [64 * 1024, 128 * 1024]) {
    const h = Buffer.from(file.subarray(off, off + 4096));
    assert.equal(h.toString('latin1', 0, 4), 'head');
    const stored = h.readUInt32LE(4);
    h.writeUInt32LE(0, 4);
    assert.equal(crc32c(h), stored, `header checksum at ${off}`);
    assert.deepEqual(h.subarray(16, 32), guidBytes(releaseUuid('vhdx-guid-0', NAME, VERSION)), 'FileWriteGuid');
    seqs.push(h.readBigUInt64LE(8));
  }
  assert.deepEqual([...seqs].sort(), [1n, 2n]);
});

test("the VHDX log is empty (zeros) with LogGuid zero: qemu-img's replayed entries, which differ between conversions, are gone", () => {
  const file = readFileSync(art('vhdx').file);
  const h = file.subarray(64 * 1024, 64 * 1024 + 4096);
  const [logLength, logOffset] = [h.readUInt32LE(68), Number(h.readBigUInt64LE(72))];
  assert.ok(logLength >= MIB, `a log region of ${logLength} bytes`);
  for (const off of [64 * 1024, 128 * 1024]) assert.ok(file.subarray(off + 48, off + 64).every((x) => x === 0), `LogGuid of the header at ${off}`);
  assert.ok(file.subarray(logOffset, logOffset + logLength).every((x) => x === 0), 'the log region is zeros');
  // A header that still names a log (one qemu-img did not replay) is refused, not patched over.
  const damaged = Buffer.from(file.subarray(0, 2 * MIB));
  for (const off of [64 * 1024, 128 * 1024]) damaged.fill(7, off + 48, off + 64);
  const read = (o: number, n: number) => damaged.subarray(o, o + n);
  assert.throws(() => planVhdxPatches(read, NAME, VERSION), /has a log still to replay \(LogGuid is not zero\)/);
});

test('qcow2 is compat 1.1 with zlib compression', () => {
  const info = JSON.parse(sh('qemu-img', ['info', '--output=json', art('qcow2').file]));
  assert.equal(info.format, 'qcow2');
  assert.equal(info['format-specific'].data.compat, '1.1');
  assert.equal(info['format-specific'].data['compression-type'], 'zlib');
  assert.equal(info['virtual-size'], RAW_SIZE);
});

test('the fixed VHD is N MiB + 512 bytes and its footer is right field by field', () => {
  const file = readFileSync(art('vhd').file);
  assert.equal(file.length, 49 * MIB + 512, 'rounded up to 49 MiB, plus the footer');
  const f = parseVhdFooter(file.subarray(file.length - 512));
  assert.equal(f.cookie, 'conectix');
  assert.equal(f.features, 2);
  assert.equal(f.fileFormatVersion, 0x00010000);
  assert.equal(f.dataOffset, 0xffffffffffffffffn);
  assert.equal(f.timestamp, SDE - 946684800);
  assert.equal(f.creatorHostOs, 'Wi2k');
  assert.equal(f.originalSize, BigInt(49 * MIB));
  assert.equal(f.currentSize, BigInt(49 * MIB));
  assert.equal(f.diskType, 2);
  assert.ok(f.checksumValid, 'checksum');
  assert.deepEqual(f.uniqueId, releaseUuid('vhd-unique-id', NAME, VERSION));
  assert.ok(f.reservedZero);
  assert.ok(file.subarray(RAW_SIZE, 49 * MIB).every((x) => x === 0), 'padding is zero');
  const info = JSON.parse(sh('qemu-img', ['info', '-f', 'vpc', '--output=json', art('vhd').file]));
  assert.equal(info['virtual-size'], 49 * MIB);
});

test('the VHD footer equals qemu-img force_size output except the clock and random fields', () => {
  const padded = join(work, 'padded.raw');
  sh('cp', ['--sparse=always', raw, padded]);
  truncateSync(padded, 49 * MIB);
  const q = join(work, 'qemu.vhd');
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', padded, q]);
  const theirs = readFileSync(q).subarray(-512);
  const ours = readFileSync(art('vhd').file).subarray(-512);
  const differ = [...ours.keys()].filter((i) => ours[i] !== theirs[i]);
  assert.ok(differ.every((i) => (i >= 24 && i < 28) || (i >= 64 && i < 84)), `unexpected differing footer bytes: ${differ}`);
  assert.equal(statSync(q).size, statSync(art('vhd').file).size);
});

test('the VMDK is streamOptimized, lsilogic, with toolsVersion, its final name and a derived CID', () => {
  const file = readFileSync(art('vmdk').file);
  const h = parseVmdkHeader(file);
  assert.equal(h.version, 3);
  assert.equal(h.capacitySectors, BigInt(RAW_SIZE / 512));
  const d = parseVmdkDescriptor(file.toString('latin1', h.descriptorOffsetSectors * 512, (h.descriptorOffsetSectors + h.descriptorSizeSectors) * 512));
  assert.equal(d.createType, 'streamOptimized');
  assert.equal(d.cid, vmdkCid(NAME, VERSION));
  assert.equal(d.parentCid, 'ffffffff');
  assert.equal(d.ddb.adapterType, 'lsilogic');
  assert.match(d.ddb.toolsVersion ?? '', /^\d+$/);
  assert.deepEqual(d.extents.map((e) => [e.type, e.file]), [['SPARSE', 'web-1.4.0.vmdk']]);
});

test('the OVA holds .ovf, .mf, .vmdk in that order, as ustar, owner 0, mode 0644, mtime SOURCE_DATE_EPOCH', async () => {
  const ova = art('ova').file;
  const entries = await listOva(ova);
  assert.deepEqual(entries.map((e) => e.name), ['web-1.4.0.ovf', 'web-1.4.0.mf', 'web-1.4.0.vmdk']);
  for (const e of entries) {
    assert.deepEqual([e.uid, e.gid, e.mode, e.mtime, e.type], [0, 0, 0o644, SDE, 'file'], e.name);
  }
  assert.equal(readFileSync(ova).toString('latin1', 257, 265), 'ustar\u000000');
  assert.equal(sh('tar', ['-tf', ova]), 'web-1.4.0.ovf\nweb-1.4.0.mf\nweb-1.4.0.vmdk\n', 'GNU tar reads the same members');
  assert.equal(statSync(ova).size % 10240, 0, 'whole tar records');
});

test('the OVA manifest lists the descriptor and the disk with their SHA256', async () => {
  const ova = art('ova').file;
  const { entries, problems } = parseManifest((await readOvaMember(ova, 'web-1.4.0.mf')).toString('utf8'));
  assert.deepEqual(problems, []);
  assert.deepEqual(entries.map((e) => e.name), ['web-1.4.0.ovf', 'web-1.4.0.vmdk']);
  assert.equal(entries[0].sha256, sha(await readOvaMember(ova, 'web-1.4.0.ovf')));
  assert.equal(entries[1].sha256, sha(await readOvaMember(ova, 'web-1.4.0.vmdk')));
  assert.equal(entries[1].sha256, art('vmdk').sha256, 'the OVA reuses the VMDK artifact');
});

test('the OVF in the OVA validates and describes the disk that is in the OVA', async () => {
  const ova = art('ova').file;
  const ovf = (await readOvaMember(ova, 'web-1.4.0.ovf')).toString('utf8');
  assert.deepEqual(validateOvf(ovf), []);
  assert.match(ovf, new RegExp(`ovf:href="web-1.4.0.vmdk" ovf:id="file1" ovf:size="${art('vmdk').size}"`));
  assert.match(ovf, new RegExp(`ovf:capacity="${RAW_SIZE}"`));
  const populated = Number(/ovf:populatedSize="(\d+)"/.exec(ovf)?.[1]);
  assert.ok(populated >= 4 * MIB && populated < 8 * MIB, `populatedSize ${populated} counts the data, not the holes`);
  assert.match(ovf, /<Version>1\.4\.0<\/Version>/);
  assert.match(ovf, /vmw:key="firmware" vmw:value="efi"/, 'UEFI-only disk');
});

test('the VMDK extracted from the OVA converts back to the original raw', async () => {
  const dir = mkdtempSync(join(work, 'x-'));
  const vmdk = await extractOvaDisk(art('ova').file, dir);
  assert.equal(vmdk, join(dir, 'web-1.4.0.vmdk'));
  const back = join(dir, 'back.raw');
  sh('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', vmdk, back]);
  assert.equal(shaFile(back), rawSha);
});

test('GCE: gzip without name or time, an oldgnu sparse tar whose only member is disk.raw', () => {
  const gz = readFileSync(art('gce').file);
  assert.deepEqual([gz[0], gz[1]], [0x1f, 0x8b]);
  assert.equal(gz[3] & 0x08, 0, 'no file name in the gzip header');
  assert.equal(gz.readUInt32LE(4), 0, 'no time stamp in the gzip header');
  const tar = gunzipSync(gz);
  assert.equal(tar.toString('latin1', 0, 9), 'disk.raw\0');
  assert.equal(tar.toString('latin1', 257, 265), 'ustar  \0', 'GNU magic (oldgnu)');
  assert.equal(tar.toString('latin1', 156, 157), 'S', 'sparse member');
  assert.ok(tar.length < RAW_SIZE / 4, 'holes are not stored');
  assert.equal(sh('tar', ['-tzf', art('gce').file]), 'disk.raw\n');
  const verbose = sh('tar', ['-tvzf', art('gce').file, '--numeric-owner']);
  assert.match(verbose, /^-rw-r--r-- 0\/0\s+\d+ 2023-11-14/);
  const r = spawnSync('tar', ['-xzOf', art('gce').file, 'disk.raw'], { maxBuffer: 256 * MIB });
  assert.equal(sha(r.stdout), rawSha);
});

test('uncompressed qcow2 is also deterministic and differs from the compressed one', async () => {
  const c = await writeFormats(['qcow2'], { raw, outDir: join(work, 'c'), name: NAME, version: VERSION, sourceDateEpoch: SDE, firmware: ['bios'], cpus: 1, memoryMiB: 512 });
  assert.notEqual(c[0].sha256, art('qcow2').sha256);
  assert.match(sh('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, c[0].file]), /identical/);
});

test('a failing onWritten fails writeFormats, after every other call has ended, and leaves no file', async () => {
  const out = join(work, 'hook-fails');
  let ended = 0;
  await assert.rejects(writeFormats(['raw', 'qcow2'], { raw, outDir: out, name: NAME, version: VERSION, sourceDateEpoch: SDE, firmware: ['bios'], cpus: 1, memoryMiB: 512,
    onWritten: async (f) => { await new Promise((r) => setTimeout(r, f === 'raw' ? 300 : 10)); ended++; if (f === 'qcow2') throw new Error('store full'); } }), /store full/);
  assert.equal(ended, 2, 'the slower call was waited for');
  assert.deepEqual(readdirSync(out), [], 'no artifact and no staging directory');
});

test('bad input is refused before any work', async () => {
  const base = { raw, outDir: join(work, 'bad'), name: NAME, version: VERSION, sourceDateEpoch: SDE, firmware: ['bios'] as ('bios' | 'uefi')[], cpus: 1, memoryMiB: 512 };
  await assert.rejects(writeFormats(['iso' as never], base), /unknown format/);
  await assert.rejects(writeFormats(['qcow2'], { ...base, version: '../x' }), /cannot be used in a file name/);
  await assert.rejects(writeFormats(['qcow2'], { ...base, raw: join(work, 'missing.raw') }), /raw disk not found/);
});
