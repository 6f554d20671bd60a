/**
 * Hostile disk images: nothing Kiln reads an image with may write outside its scratch directory,
 * open a file the image names, or hide what ships. Real tools throughout (mke2fs, qemu-img,
 * fuse2fs); the hostile bytes are made by patching images those tools wrote.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, lutimesSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { auditImage } from '../../src/audit/image.js';
import { classifyDisk, HEAD_BYTES, inspectDiskFile } from '../../src/image/disk-file.js';
import { diffRootTrees, diffTrees } from '../../src/reproduce/treediff.js';
import { buildDisk } from './seal-fixture.js';

const work = mkdtempSync(join(tmpdir(), 'kiln-hostile-'));
after(() => rmSync(work, { recursive: true, force: true }));

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function patch(file: string, offset: number, bytes: Buffer): void {
  const b = readFileSync(file);
  bytes.copy(b, offset);
  writeFileSync(file, b);
}

function fuse2fsProcesses(): string[] {
  return execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n').filter((l) => /fuse2fs -f .*kiln-hostile-/.test(l));
}

/** A small root tree: enough for the audit to call it an image. */
function rootTree(dir: string): void {
  mkdirSync(join(dir, 'etc'), { recursive: true });
  writeFileSync(join(dir, 'etc/hostname'), 'web\n');
  writeFileSync(join(dir, 'etc/os-release'), 'ID=debian\n');
}

test('a qcow2 with a backing file is refused before anything opens it, naming the file', async () => {
  const host = join(work, 'host-secret.raw');
  writeFileSync(host, Buffer.alloc(1 << 20));
  const img = join(work, 'backed.qcow2');
  qemuImg('create', '-f', 'qcow2', '-b', host, '-F', 'raw', img);
  assert.throws(() => inspectDiskFile(img), (e: Error) => /a qcow2 with a backing file \(".*host-secret\.raw"\)/.test(e.message));
  const scratch = join(work, 'scratch-backed');
  mkdirSync(scratch);
  await assert.rejects(auditImage(img, { workDir: scratch }), /backing file/);
  assert.deepEqual(readdirSync(scratch), [], 'nothing was converted');
});

test('a qcow2 with an external data file, a VMDK descriptor with extents, a VMDK with a parent, a differencing VHD are refused', () => {
  const host = join(work, 'host-data.raw');
  writeFileSync(host, Buffer.alloc(1 << 20));
  const data = join(work, 'data.qcow2');
  qemuImg('create', '-f', 'qcow2', '-o', `data_file=${host},data_file_raw=on`, data, '1M');
  assert.throws(() => inspectDiskFile(data), /external data file/);

  const flat = join(work, 'flat.vmdk');
  qemuImg('create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, '1M');
  assert.throws(() => inspectDiskFile(flat), /VMDK descriptor file: the disk data lives in the extent files/);

  const sparse = join(work, 'sparse.vmdk');
  qemuImg('create', '-f', 'vmdk', '-o', 'subformat=monolithicSparse', sparse, '1M');
  assert.equal(inspectDiskFile(sparse).format, 'vmdk', 'a monolithic sparse VMDK is one file');
  const text = readFileSync(sparse);
  const at = text.indexOf('parentCID=ffffffff');
  assert.ok(at > 0);
  patch(sparse, at, Buffer.from('parentCID=0badcafe'));
  assert.throws(() => inspectDiskFile(sparse), /VMDK with a parent disk/);

  const vhd = join(work, 'dynamic.vhd');
  qemuImg('create', '-f', 'vpc', vhd, '1M');
  assert.equal(inspectDiskFile(vhd).format, 'vpc');
  patch(vhd, 60, Buffer.from([0, 0, 0, 4]));
  assert.throws(() => inspectDiskFile(vhd), /differencing VHD/);
});

test('classification reads the header, not the name: a raw disk, a qcow2 v1, a QED', () => {
  const head = Buffer.alloc(HEAD_BYTES);
  assert.equal(classifyDisk('x.qcow2', head, Buffer.alloc(512), HEAD_BYTES).format, 'raw');
  const qcow1 = Buffer.alloc(HEAD_BYTES);
  qcow1.write('QFI\xfb', 0, 'latin1');
  qcow1.writeUInt32BE(1, 4);
  assert.throws(() => classifyDisk('old.img', qcow1, Buffer.alloc(512), HEAD_BYTES), /qcow version 1/);
  const qed = Buffer.alloc(HEAD_BYTES);
  qed.write('QED\0', 0, 'latin1');
  assert.throws(() => classifyDisk('q.img', qed, Buffer.alloc(512), HEAD_BYTES), /QED/);
});

test('an entry whose name holds "/" writes nothing outside the scratch and is reported as unreadable', async () => {
  const canary = `/tmp/kiln-canary-${randomBytes(4).toString('hex')}`;
  const hostile = `../../../../../../../../../..${canary}`;
  const tree = join(work, 'slash-tree');
  rootTree(tree);
  writeFileSync(join(tree, 'etc', 'X'.repeat(hostile.length)), 'planted\n');
  const fs = join(work, 'slash.ext4');
  // No metadata checksums, so the patched directory block still reads.
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-O', '^metadata_csum,^has_journal', '-d', tree, fs, '8M']);
  const b = readFileSync(fs);
  const at = b.indexOf('X'.repeat(hostile.length));
  assert.ok(at > 0, 'the placeholder name is in the image');
  patch(fs, at, Buffer.from(hostile));
  const scratch = join(work, 'scratch-slash');
  mkdirSync(scratch);
  try {
    const findings = await auditImage(fs, { workDir: scratch });
    assert.ok(!existsSync(canary), `the audit wrote ${canary} on the host`);
    const etc = findings.find((f) => f.path === '/etc');
    assert.equal(etc?.check, 'unreadable', `the directory that holds the entry is a finding: ${JSON.stringify(findings)}`);
    assert.match(etc.message, /EIO/);
    assert.deepEqual(readdirSync(scratch), []);
    assert.deepEqual(fuse2fsProcesses(), [], 'fuse2fs stopped');
  } finally {
    rmSync(canary, { force: true });
  }
});

test('a filesystem without /etc is a finding, not a clean audit', async () => {
  const tree = join(work, 'empty-tree');
  mkdirSync(join(tree, 'srv'), { recursive: true });
  const fs = join(work, 'empty.ext4');
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', tree, fs, '8M']);
  const findings = await auditImage(fs, { workDir: join(work, 'scratch-empty') });
  assert.deepEqual(findings.map((f) => `${f.check} ${f.path}`), ['unreadable /etc']);
});

test('the tree diff reads disks losslessly: setuid bits, capabilities, hard links and device numbers', async () => {
  const trees = ['a', 'b'].map((n) => join(work, `lossless-${n}`));
  for (const [i, t] of trees.entries()) {
    rootTree(t);
    mkdirSync(join(t, 'usr/bin'), { recursive: true });
    writeFileSync(join(t, 'usr/bin/su'), 'binary');
    chmodSync(join(t, 'usr/bin/su'), i === 0 ? 0o755 : 0o4755);
    writeFileSync(join(t, 'usr/bin/ping'), 'binary');
    execFileSync('setcap', [i === 0 ? 'cap_net_raw+ep' : 'cap_net_admin+ep', join(t, 'usr/bin/ping')]);
    writeFileSync(join(t, 'usr/bin/a'), 'same');
    if (i === 0) linkSync(join(t, 'usr/bin/a'), join(t, 'usr/bin/b'));
    else writeFileSync(join(t, 'usr/bin/b'), 'same');
    mkdirSync(join(t, 'dev'));
    execFileSync('mknod', [join(t, 'dev/null'), 'c', '1', i === 0 ? '3' : '5']);
  }
  // Same times everywhere: only what the test changed may differ.
  for (const t of trees) {
    const all = execFileSync('find', [t], { encoding: 'utf8' }).trim().split('\n');
    for (const p of all) lutimesSync(p, 1_700_000_000, 1_700_000_000);
  }
  const disks = trees.map((t) => { const d = `${t}.raw`; buildDisk(t, d); return d; });
  const diffs = await diffRootTrees(disks[0], disks[1], join(work, 'scratch-diff'));
  // mke2fs dates lost+found with the clock (Kiln's own builds pin it): only what the test changed counts.
  const shown = diffs.filter((d) => d.path !== '/lost+found').map((d) => `${d.path}: ${d.what.join(', ')}`);
  assert.deepEqual(shown, [
    '/dev/null: device 259 -> 261',
    '/usr/bin/a: links 2 -> 1',
    '/usr/bin/b: links 2 -> 1',
    '/usr/bin/ping: xattr security.capability changed',
    '/usr/bin/su: mode 755 -> 4755',
  ]);
  assert.deepEqual(fuse2fsProcesses(), [], 'both views are gone');
});

test('diffTrees reports an unreadable directory as a difference', async () => {
  const a = join(work, 'unreadable-a');
  const b = join(work, 'unreadable-b');
  mkdirSync(join(a, 'etc'), { recursive: true });
  writeFileSync(join(b), 'not a directory');
  const diffs = await diffTrees(a, b);
  assert.match(diffs[0].what.join(), /unreadable in the rebuild \(ENOTDIR\)/);
});

test('kill -9 of Kiln while it reads an image leaves no fuse2fs and no mount', async () => {
  const tree = join(work, 'kill-tree');
  rootTree(tree);
  const fs = join(work, 'kill.ext4');
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', tree, fs, '8M']);
  const script = `
    import { withMountedFilesystem } from ${JSON.stringify(new URL('../../src/image/mount.js', import.meta.url).href)};
    await withMountedFilesystem(${JSON.stringify(fs)}, 0, ${JSON.stringify(join(work, 'scratch-kill'))}, async (t) => {
      process.stdout.write('ready ' + t.root + '\\n');
      await new Promise(() => {});
    });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const root = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { const m = /ready (\S+)/.exec(d.toString()); if (m) resolve(m[1]); });
    child.on('exit', () => reject(new Error('the child ended before mounting')));
  });
  assert.ok(existsSync(join(root, 'etc/hostname')), 'the view is readable');
  assert.equal(fuse2fsProcesses().length, 1);
  child.kill('SIGKILL');
  const deadline = Date.now() + 10_000;
  while (fuse2fsProcesses().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(fuse2fsProcesses(), [], 'fuse2fs died with Kiln');
  assert.doesNotMatch(readFileSync('/proc/mounts', 'utf8'), /kiln-hostile-/, 'the host never saw the mount');
});
