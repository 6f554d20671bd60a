import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { patchCoreImg, patchMbr } from '../../src/disk/bios.js';
import { requireOnHost } from './host-requirements.js';

function protectiveMbr(): Buffer {
  const m = Buffer.alloc(512);
  m.writeUInt32LE(0xdeadbeef, 0x1b8); // disk signature
  m.set([0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0xff, 0xff, 0x3f, 0], 0x1be);
  m[0x1fe] = 0x55;
  m[0x1ff] = 0xaa;
  return m;
}

function fakeBootImg(): Buffer {
  return Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7 + 3) & 0xff));
}

test('the MBR gets boot.img code up to 0x1B8, the core LBA at 0x5C and the drive check NOPed', () => {
  const mbr = protectiveMbr();
  const boot = fakeBootImg();
  const out = patchMbr(mbr, boot, 2048);
  assert.equal(out.length, 512);
  for (let i = 0; i < 0x1b8; i++) {
    if (i >= 0x5c && i < 0x64) continue;
    if (i === 0x66 || i === 0x67) continue;
    assert.equal(out[i], boot[i], `byte 0x${i.toString(16)}`);
  }
  assert.deepEqual([...out.subarray(0x5c, 0x64)], [0x00, 0x08, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...out.subarray(0x66, 0x68)], [0x90, 0x90]);
  assert.deepEqual(out.subarray(0x1b8), mbr.subarray(0x1b8), 'signature, partition table and 55AA are kept');
  assert.equal(mbr[0], 0, 'the input is not modified');
});

test('a large core LBA is written as a little-endian u64', () => {
  const out = patchMbr(protectiveMbr(), fakeBootImg(), 0x1_0000_0001);
  assert.deepEqual([...out.subarray(0x5c, 0x64)], [1, 0, 0, 0, 1, 0, 0, 0]);
});

test('patching refuses a sector without the 55AA signature and a boot.img of the wrong size', () => {
  assert.throws(() => patchMbr(Buffer.alloc(512), fakeBootImg(), 2048), /55AA/);
  assert.throws(() => patchMbr(protectiveMbr(), Buffer.alloc(440), 2048), /boot\.img/);
});

function fakeCore(sectors: number, tailBytes = 512): Buffer {
  const c = Buffer.alloc((sectors - 1) * 512 + tailBytes, 0xab);
  c.writeBigUInt64LE(2n, 0x1f4);
  c.writeUInt16LE(sectors - 1, 0x1fc);
  c.writeUInt16LE(0x0820, 0x1fe);
  return c;
}

test('core.img: the blocklist start points at the sector after the first, length and segment kept', () => {
  const core = fakeCore(240, 100);
  const out = patchCoreImg(core, 2048, 2048);
  assert.equal(out.length, 240 * 512, 'padded to whole sectors');
  assert.equal(out.readBigUInt64LE(0x1f4), 2049n);
  assert.equal(out.readUInt16LE(0x1fc), 239);
  assert.equal(out.readUInt16LE(0x1fe), 0x0820);
  assert.deepEqual(out.subarray(0x200, core.length), core.subarray(0x200));
  assert.ok(out.subarray(core.length).every((b) => b === 0), 'padding is zero');
});

test('core.img must fit the BIOS boot partition and look like a GRUB core image', () => {
  assert.throws(() => patchCoreImg(fakeCore(300), 2048, 256), /300 sectors.*256/);
  const bad = fakeCore(10);
  bad.writeUInt16LE(3, 0x1fc);
  assert.throws(() => patchCoreImg(bad, 2048, 2048), /blocklist length/);
});

test('with the real GRUB boot.img the patched MBR keeps its code and jumps to the core LBA', () => {
  requireOnHost('/usr/lib/grub/i386-pc/boot.img', 'package grub-pc-bin', 'run: sudo npx kiln doctor');
  const boot = readFileSync('/usr/lib/grub/i386-pc/boot.img');
  const out = patchMbr(protectiveMbr(), boot, 2048);
  assert.deepEqual(out.subarray(0, 0x5c), boot.subarray(0, 0x5c));
  assert.deepEqual(out.subarray(0x64, 0x66), boot.subarray(0x64, 0x66));
  assert.deepEqual(out.subarray(0x68, 0x1b8), boot.subarray(0x68, 0x1b8));
  assert.equal(out.readBigUInt64LE(0x5c), 2048n);
});
