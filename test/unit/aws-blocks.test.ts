import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { blockChecksum, checkAmiName, diskBlocks, EBS_BLOCK, linearAggregate, volumeSizeGiB } from '../../src/cloud/aws/snapshot-blocks.js';
import { cpioMembers, datasourceList, fstabRoot, initramfsMembers, kernelOption, PLATFORM_DRIVERS } from '../../src/cloud/fitness.js';
import { publishedColumn } from '../../src/cli/releases.js';
import { cloudImageId } from '../../src/cli/resolve.js';
import { KilnError } from '../../src/errors.js';
import type { Resolved } from '../../src/store/index.js';

test('a snapshot volume is the disk rounded up to whole GiB', () => {
  assert.equal(volumeSizeGiB(1), 1);
  assert.equal(volumeSizeGiB(1024 ** 3), 1);
  assert.equal(volumeSizeGiB(1024 ** 3 + 512), 2);
  assert.equal(volumeSizeGiB(2 * 1024 ** 3 + 512), 3); // a fixed VHD's footer would need a third GiB: the raw is what goes up
});

test('the linear aggregate is SHA-256 over the raw block digests in index order, whatever order they were put in', () => {
  const a = blockChecksum(Buffer.alloc(EBS_BLOCK, 1));
  const b = blockChecksum(Buffer.alloc(EBS_BLOCK, 2));
  const want = createHash('sha256').update(Buffer.concat([a.raw, b.raw])).digest('base64');
  assert.equal(linearAggregate([{ index: 7, sha256: b.raw }, { index: 3, sha256: a.raw }]), want);
  assert.notEqual(linearAggregate([{ index: 3, sha256: b.raw }, { index: 7, sha256: a.raw }]), want);
  assert.equal(a.base64, createHash('sha256').update(Buffer.alloc(EBS_BLOCK, 1)).digest('base64'));
});

test('diskBlocks yields the non-zero 512 KiB blocks with their index, pads the last one, and hashes the whole file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-blocks-'));
  try {
    const f = join(dir, 'disk.raw');
    const size = 40 * EBS_BLOCK + 4096; // a partial last block
    writeFileSync(f, '');
    truncateSync(f, size);
    const { openSync, writeSync, closeSync, readFileSync } = await import('node:fs');
    const fd = openSync(f, 'r+');
    writeSync(fd, Buffer.from('first'), 0, 5, 0);
    writeSync(fd, Buffer.from('seventeen'), 0, 9, 17 * EBS_BLOCK + 100);
    writeSync(fd, Buffer.from('tail'), 0, 4, 40 * EBS_BLOCK + 10);
    closeSync(fd);
    const stats: { read: number; skipped: number; sha256?: string } = { read: 0, skipped: 0 };
    const got: { index: number; len: number; head: string }[] = [];
    for await (const b of diskBlocks(f, { skipZero: true, stats })) got.push({ index: b.index, len: b.data.length, head: b.data.subarray(0, 32).toString('latin1').replace(/\0+$/, '') });
    assert.deepEqual(got.map((g) => g.index), [0, 17, 40]);
    assert.ok(got.every((g) => g.len === EBS_BLOCK));
    assert.equal(got[2].head.slice(10, 14), 'tail');
    assert.equal(stats.read, 41);
    assert.equal(stats.skipped, 38);
    assert.equal(stats.sha256, createHash('sha256').update(readFileSync(f)).digest('hex'));
    const all: number[] = [];
    for await (const b of diskBlocks(f, { skipZero: false, stats: { read: 0, skipped: 0 } })) all.push(b.index);
    assert.equal(all.length, 41, 'an encrypted snapshot gets every block');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('AMI names follow EC2\'s character rules', () => {
  assert.equal(checkAmiName('web-release-0.1.0'), 'web-release-0.1.0');
  assert.throws(() => checkAmiName('ab'), KilnError);
  assert.throws(() => checkAmiName('web+release'), /not a valid AMI name/);
  assert.throws(() => checkAmiName('x'.repeat(129)), KilnError);
});

test('fstabRoot finds what mounts /, ignoring comments', () => {
  assert.equal(fstabRoot('# / on sda\nUUID=abc / ext4 defaults 0 1\nUUID=def /boot/efi vfat umask=0077 0 1\n'), 'UUID=abc');
  assert.equal(fstabRoot('/dev/xvda1 / ext4 defaults 0 1'), '/dev/xvda1');
  assert.equal(fstabRoot('UUID=def /boot/efi vfat defaults 0 1'), undefined);
});

test('kernelOption reads y, m or unset', () => {
  const cfg = 'CONFIG_BLK_DEV_NVME=y\nCONFIG_ENA_ETHERNET=m\n# CONFIG_FOO is not set\n';
  assert.equal(kernelOption(cfg, 'CONFIG_BLK_DEV_NVME'), 'y');
  assert.equal(kernelOption(cfg, 'CONFIG_ENA_ETHERNET'), 'm');
  assert.equal(kernelOption(cfg, 'CONFIG_FOO'), undefined);
  assert.equal(kernelOption(cfg, 'CONFIG_BLK_DEV'), undefined);
});

function newc(files: string[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  for (const name of [...files, 'TRAILER!!!']) {
    const data = name === 'TRAILER!!!' ? Buffer.alloc(0) : Buffer.from(`content of ${name}`);
    const fields = [1, 0o100644, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'latin1');
    const nameBuf = Buffer.from(name + '\0');
    parts.push(header, nameBuf, pad(110 + nameBuf.length), data, pad(data.length));
  }
  const b = Buffer.concat(parts);
  return Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
}

test('the initramfs reader lists an early cpio and the compressed main one', async () => {
  const early = newc(['kernel/x86/microcode/GenuineIntel.bin']);
  const main = newc(['usr/lib/modules/6.1.0-cloud-amd64/kernel/drivers/net/ethernet/amazon/ena/ena.ko.xz', 'init']);
  assert.deepEqual(cpioMembers(early).names, ['kernel/x86/microcode/GenuineIntel.bin']);
  const dir = mkdtempSync(join(tmpdir(), 'kiln-initrd-'));
  try {
    const gz = await initramfsMembers(Buffer.concat([early, gzipSync(main)]), dir);
    assert.deepEqual(gz, ['kernel/x86/microcode/GenuineIntel.bin', 'usr/lib/modules/6.1.0-cloud-amd64/kernel/drivers/net/ethernet/amazon/ena/ena.ko.xz', 'init']);
    const { execFileSync } = await import('node:child_process');
    const zst = execFileSync('zstd', ['-q', '-c'], { input: main });
    assert.deepEqual(await initramfsMembers(Buffer.concat([early, zst]), dir), gz);
    await assert.rejects(initramfsMembers(Buffer.concat([early, Buffer.from('BZh91AY&SY')]), dir), /compressed in a way Kiln does not read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('kiln releases shows where a release is published', () => {
  assert.equal(publishedColumn({}), '-');
  assert.equal(publishedColumn({ aws: { 'us-east-1': 'ami-2', 'eu-west-1': 'ami-1' } }), 'aws:eu-west-1,us-east-1');
});

test('cloudImageId picks the region asked for, the only one, or says where the release is', () => {
  const r = { name: 'web', version: 'release-0.1.0', cloudIds: { aws: { 'eu-west-1': 'ami-0123456789abcdef0' } } } as unknown as Resolved;
  assert.deepEqual(cloudImageId(r, 'aws', 'eu-west-1'), { region: 'eu-west-1', id: 'ami-0123456789abcdef0' });
  assert.deepEqual(cloudImageId(r, 'aws'), { region: 'eu-west-1', id: 'ami-0123456789abcdef0' });
  assert.throws(() => cloudImageId(r, 'aws', 'us-east-1'), /no aws image in us-east-1: it is published to aws in eu-west-1/);
  assert.throws(() => cloudImageId(r, 'gce'), /not published to gce/);
  const two = { ...r, cloudIds: { aws: { 'eu-west-1': 'ami-1', 'us-east-1': 'ami-2' } } } as unknown as Resolved;
  assert.throws(() => cloudImageId(two, 'aws'), (e: KilnError) => /name a region/.test(e.message) && /pass --region/.test(e.hint ?? ''));
});

test("cloud-init's datasource_list: the last file that sets it wins; unset means cloud-init's default (which has Azure)", () => {
  assert.equal(datasourceList(['# nothing\n', 'users: [default]\n']), undefined);
  assert.deepEqual(datasourceList(['datasource_list: [ NoCloud, ConfigDrive ]\n', 'datasource_list: [ "Azure", None ]\n']), ['Azure', 'None']);
  assert.deepEqual(datasourceList(['datasource_list: [Azure]\n', 'datasource_list: [NoCloud]\n']), ['NoCloud']);
});

test('each cloud names the drivers its VMs need', () => {
  assert.deepEqual(PLATFORM_DRIVERS.ec2.map((d) => d.module), ['nvme', 'ena']);
  assert.deepEqual(PLATFORM_DRIVERS.azure.map((d) => d.module), ['hv_vmbus', 'hv_storvsc', 'hv_netvsc']);
  assert.deepEqual(PLATFORM_DRIVERS.gce.map((d) => d.module), ['virtio_scsi', 'gve']);
});
