import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildManifest, parseManifest } from '../../src/formats/manifest.js';
import { listOva, writeOva } from '../../src/formats/ova.js';
import { buildTarHeader, chooseTarFormat, USTAR_MAX_SIZE } from '../../src/formats/tar-header.js';

const SDE = 1700000000;

function gnuTar(dir: string, format: string, names: string[]): Buffer {
  const out = join(dir, `ref-${format}.tar`);
  const r = spawnSync('tar', ['-C', dir, `--format=${format}`, '--owner=root:0', '--group=root:0', '--mode=0644', `--mtime=@${SDE}`, '-cf', out, ...names]);
  assert.equal(r.status, 0, r.stderr?.toString());
  return readFileSync(out);
}

function members(dir: string) {
  const files = [['a.ovf', '<Envelope/>\n'], ['a.mf', 'SHA256(a.ovf)= x\n'], ['a.vmdk', 'K'.repeat(1500)]] as const;
  for (const [n, c] of files) {
    writeFileSync(join(dir, n), c);
    utimesSync(join(dir, n), SDE, SDE);
  }
  return files.map(([n, c]) => ({ name: n, data: Buffer.from(c), size: Buffer.byteLength(c) }));
}

for (const format of ['ustar', 'gnu'] as const) {
  test(`a ${format} header is byte for byte what GNU tar writes with owner 0, mode 0644 and mtime SDE`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-tar-'));
    members(dir);
    const ref = gnuTar(dir, format, ['a.vmdk']);
    assert.deepEqual(buildTarHeader({ name: 'a.vmdk', size: 1500, mtime: SDE }, format), ref.subarray(0, 512));
  });
}

test('the whole OVA archive equals GNU tar --format=ustar of the same members in the same order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-tar-'));
  const m = members(dir);
  const ours = join(dir, 'ours.ova');
  const { format } = await writeOva(ours, [m[0], m[1], { name: 'a.vmdk', path: join(dir, 'a.vmdk'), size: 1500 }], SDE);
  assert.equal(format, 'ustar');
  assert.deepEqual(readFileSync(ours), gnuTar(dir, 'ustar', ['a.ovf', 'a.mf', 'a.vmdk']));
  const list = await listOva(ours);
  assert.deepEqual(list.map((e) => e.name), ['a.ovf', 'a.mf', 'a.vmdk']);
  assert.ok(list.every((e) => e.uid === 0 && e.gid === 0 && e.mode === 0o644 && e.mtime === SDE));
});

test('members of 8 GiB or more switch the archive to GNU format with a base-256 size', () => {
  assert.equal(chooseTarFormat([10, USTAR_MAX_SIZE]), 'ustar');
  assert.equal(chooseTarFormat([10, USTAR_MAX_SIZE + 1]), 'gnu');
  const big = 9 * 1024 ** 3;
  assert.throws(() => buildTarHeader({ name: 'd.vmdk', size: big, mtime: SDE }, 'ustar'), /too large for ustar/);
  const h = buildTarHeader({ name: 'd.vmdk', size: big, mtime: SDE }, 'gnu');
  assert.equal(h[124], 0x80);
  assert.equal(h.readBigUInt64BE(128), BigInt(big));
  assert.equal(h.toString('latin1', 257, 265), 'ustar  \0');
});

test('member names must be plain names that fit the 100-byte field', () => {
  assert.throws(() => buildTarHeader({ name: 'dir/x.vmdk', size: 1, mtime: 0 }, 'ustar'));
  assert.throws(() => buildTarHeader({ name: 'x'.repeat(101), size: 1, mtime: 0 }, 'ustar'));
});

test('the manifest has exactly "SHA256(name)= hex" lines and rejects other spellings', () => {
  const a = 'a'.repeat(64);
  const b = 'b'.repeat(64);
  const text = buildManifest([{ name: 'x.ovf', sha256: a }, { name: 'x.vmdk', sha256: b }]);
  assert.equal(text, `SHA256(x.ovf)= ${a}\nSHA256(x.vmdk)= ${b}\n`);
  assert.deepEqual(parseManifest(text), { entries: [{ name: 'x.ovf', sha256: a }, { name: 'x.vmdk', sha256: b }], problems: [] });
  assert.equal(parseManifest(`SHA256 (x.ovf) = ${a}\n`).problems.length, 1, 'the ovftool SHA1-era spacing is what ESXi rejects');
  assert.equal(parseManifest(`SHA1(x.ovf)= ${a.slice(0, 40)}\n`).problems.length, 1);
  assert.throws(() => buildManifest([{ name: 'x', sha256: 'nothex' }]));
});
