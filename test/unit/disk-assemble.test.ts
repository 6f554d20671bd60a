// Assembles real (small) disks with the host tools: mke2fs, debugfs, mkfs.vfat, mtools, sfdisk, grub-mkimage.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync, linkSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { KilnError } from '../../src/errors.js';
import { assembleDisk, diskIds, type DiskSpec } from '../../src/disk/index.js';
import { rootOffset } from '../../src/image/root-fs.js';

const SDE = 1700000000;
const MiB = 1024 * 1024;
const SEED = 'tiny@release-1.0.0';
const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function tempDir(base = tmpdir()): string {
  const d = mkdtempSync(join(base, 'kiln-disk-'));
  dirs.push(d);
  return d;
}

/** A small root tree: nested dirs, a hard link, symlinks, a file with a future mtime, an odd name. */
function tinyTree(dir: string): string {
  const root = join(dir, 'root');
  for (const d of ['etc/ssh', 'usr/bin', 'usr/share/doc/x', 'boot', 'var/log']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'etc/hostname'), 'tiny\n');
  writeFileSync(join(root, 'usr/bin/tool'), Buffer.alloc(300_000, 7), { mode: 0o755 });
  linkSync(join(root, 'usr/bin/tool'), join(root, 'usr/bin/tool2'));
  writeFileSync(join(root, 'usr/share/doc/x/a file "quoted"'), 'doc\n');
  symlinkSync('usr/bin', join(root, 'bin'));
  symlinkSync('/' + 'x'.repeat(100), join(root, 'long-link'));
  writeFileSync(join(root, 'boot/vmlinuz-1'), 'kernel');
  symlinkSync('boot/vmlinuz-1', join(root, 'vmlinuz'));
  writeFileSync(join(root, 'boot/initrd.img-1'), 'initrd');
  symlinkSync('boot/initrd.img-1', join(root, 'initrd.img'));
  writeFileSync(join(root, 'etc/future'), 'from the future\n');
  utimesSync(join(root, 'etc/future'), 2_000_000_000, 2_000_000_000);
  return root;
}

function spec(dir: string, over: Partial<DiskSpec> = {}): DiskSpec {
  return { root: over.root ?? tinyTree(dir), out: join(dir, 'disk.raw'), workDir: join(dir, 'work'), sizeBytes: 100 * MiB, firmware: ['bios', 'uefi'], seed: SEED, sourceDateEpoch: SDE, kernelCmdline: 'quiet', ...over };
}

const sha256 = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('two assemblies from separate trees in different directories are bit-identical', async () => {
  const a = tempDir();
  const b = tempDir('/var/tmp');
  const la = await assembleDisk(spec(a));
  await new Promise((r) => setTimeout(r, 1100)); // a clock second later: nothing may depend on it
  const lb = await assembleDisk(spec(b));
  assert.deepEqual(la, lb);
  assert.equal(sha256(join(a, 'disk.raw')), sha256(join(b, 'disk.raw')));
  assert.equal(statSync(join(a, 'disk.raw')).size, 100 * MiB);
  assert.ok(statSync(join(a, 'disk.raw')).blocks * 512 < 20 * MiB, 'the raw disk stays sparse');
  for (const f of ['root.ext4', 'esp.vfat', 'core.img', 'BOOTX64.EFI']) assert.throws(() => lstatSync(join(a, 'work', f)), /ENOENT/, `${f} removed`);
  assert.throws(() => lstatSync(join(a, 'disk.raw.partial')), /ENOENT/);

  const other = tempDir();
  await assembleDisk(spec(other, { seed: 'tiny@release-1.0.1' }));
  assert.notEqual(sha256(join(other, 'disk.raw')), sha256(join(a, 'disk.raw')), 'another version gives another disk');
});

test('the disk has the GPT, filesystems and boot code it claims', async () => {
  const d = tempDir();
  const s = spec(d);
  const layout = await assembleDisk(s);
  const ids = diskIds(SEED);
  const disk = s.out;

  const dump = run('sfdisk', ['--dump', disk]);
  assert.match(dump, new RegExp(`label-id: ${ids.diskGuid.toUpperCase()}`));
  for (const p of layout.partitions) {
    assert.match(dump, new RegExp(`start=\\s*${p.startLba}, size=\\s*${p.sizeLba}, type=${p.type}, uuid=${p.uuid.toUpperCase()}, name="${p.name}"`));
  }

  const root = { offset: rootOffset(disk) };
  const p3 = layout.partitions[2]!;
  assert.equal(root.offset, p3.startLba * 512);
  const fs = `${disk}?offset=${root.offset}`;
  run('e2fsck', ['-fn', fs]);
  const sb = run('dumpe2fs', ['-h', fs]);
  assert.match(sb, new RegExp(`Filesystem UUID:\\s+${ids.rootFsUuid}`));
  assert.match(sb, new RegExp(`Directory Hash Seed:\\s+${ids.rootHashSeed}`));

  const cat = (p: string) => run('debugfs', ['-R', `cat ${p}`, fs]);
  assert.match(cat('/etc/fstab'), new RegExp(`^UUID=${ids.rootFsUuid} / ext4 `, 'm'));
  assert.match(cat('/boot/grub/grub.cfg'), new RegExp(`linux /vmlinuz root=UUID=${ids.rootFsUuid} ro .*console=ttyS0,115200n8 quiet`));
  assert.equal(cat('/etc/hostname'), 'tiny\n');
  const st = run('debugfs', ['-R', 'stat /etc/future', fs]);
  for (const t of ['ctime', 'atime', 'mtime', 'crtime']) assert.match(st, new RegExp(`${t}: 0x${SDE.toString(16)}:`), `${t} of a future file is clamped to SDE`);
  const hard = run('debugfs', ['-R', 'stat /usr/bin/tool2', fs]);
  assert.match(hard, /Links: 2/);

  const esp = `${disk}@@${layout.partitions[1]!.startLba * 512}`;
  assert.match(run('mdir', ['-i', esp, '::/EFI/BOOT']), /BOOTX64\s+EFI\s+\d+/);
  assert.match(run('minfo', ['-i', esp]), new RegExp(`serial number: ${layout.espSerial.replace('-', '')}`, 'i'));

  const img = readFileSync(disk);
  const boot = readFileSync('/usr/lib/grub/i386-pc/boot.img');
  assert.deepEqual(img.subarray(0, 0x5c), boot.subarray(0, 0x5c), 'GRUB boot code in the MBR');
  assert.equal(img.readBigUInt64LE(0x5c), 2048n);
  assert.equal(img.readUInt16BE(0x1fe), 0x55aa);
  assert.equal(img.readBigUInt64LE(2048 * 512 + 0x1f4), 2049n, 'core.img at LBA 2048 loads from 2049');
});

test('UEFI-only keeps the layout, with no BIOS boot code; BIOS-only leaves the ESP empty', async () => {
  const u = tempDir();
  const lu = await assembleDisk(spec(u, { firmware: ['uefi'] }));
  const both = diskIds(SEED);
  assert.equal(lu.partitions.length, 3);
  assert.equal(lu.rootFsUuid, both.rootFsUuid);
  const img = readFileSync(join(u, 'disk.raw'));
  assert.ok(img.subarray(0, 0x1b8).every((b) => b === 0), 'no MBR boot code');
  assert.ok(img.subarray(2048 * 512, 4096 * 512).every((b) => b === 0), 'no core.img');

  const b = tempDir();
  const lb = await assembleDisk(spec(b, { firmware: ['bios'] }));
  const esp = `${join(b, 'disk.raw')}@@${lb.partitions[1]!.startLba * 512}`;
  assert.doesNotMatch(run('mdir', ['-i', esp, '::/']), /EFI/);
  assert.equal(readFileSync(join(b, 'disk.raw')).readBigUInt64LE(0x5c), 2048n);
});

test('a tree too big for the disk is a clear error saying how big the disk must be', async () => {
  const d = tempDir();
  const s = spec(d, { sizeBytes: 90 * MiB });
  writeFileSync(join(s.root, 'big'), Buffer.alloc(40 * MiB, 1));
  await assert.rejects(assembleDisk(s), (e: unknown) => {
    assert.ok(e instanceof KilnError);
    assert.match(e.message, /needs about \d+ MiB of ext4 but the root partition is 23 MiB/);
    assert.match(e.hint ?? '', /disk\.size .* at least \d+MiB/);
    assert.match(e.where.step ?? '', /ext4/);
    return true;
  });
  assert.throws(() => lstatSync(s.out), /ENOENT/, 'no partial disk left behind');
  assert.throws(() => lstatSync(`${s.out}.partial`), /ENOENT/);
});

test('bad sizes and a missing tree are refused before any tool runs', async () => {
  const d = tempDir();
  const s = spec(d);
  await assert.rejects(assembleDisk({ ...s, sizeBytes: 100 * MiB + 512 }), /whole number of MiB/);
  await assert.rejects(assembleDisk({ ...s, root: join(d, 'nope') }), /root tree not found/);
  await assert.rejects(assembleDisk({ ...s, firmware: [] }), /no firmware/);
  await assert.rejects(assembleDisk({ ...s, kernelCmdline: 'quiet\n}\nmenuentry evil {' }), /one line/);
  assert.throws(() => lstatSync(s.workDir), /ENOENT/, 'nothing was started');
});

test('rootOffset names the file when there is no GPT and no filesystem', async () => {
  const d = tempDir();
  const f = join(d, 'blank.raw');
  writeFileSync(f, Buffer.alloc(64 * 1024));
  assert.throws(() => rootOffset(f), (e: unknown) => e instanceof KilnError && /no GPT partition table/.test(e.message) && e.where.file === f);
});
