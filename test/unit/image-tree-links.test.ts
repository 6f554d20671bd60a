/**
 * A tree with planted links: every host-side write or read Kiln does to an image tree (stamp, image
 * layer, disk boot files, provisioning cleanup, the package list) stays inside the tree. The "host"
 * is a canary directory beside the tree; the links point at it by absolute path and by `../`.
 */
import { strict as assert } from 'node:assert';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, beforeEach, test } from 'node:test';
import { applyImageLayer } from '../../src/image/layer.js';
import { stampTree } from '../../src/image/stamp.js';
import { hostPath, mkdirInTree, readTreeFile, removeInTree, resolvedPath, writeTreeFile } from '../../src/image/tree.js';
import { releaseTree } from '../../src/provision/chroot.js';
import { installedPackages } from '../../src/source/debian.js';

// The links below aim at `host` by its absolute path. Inside the tree, a host path whose first component
// is one of the linked names (TMPDIR=/var/tmp/...: /var is a planted link) resolves through that link
// again and loops, as it would in a chroot (Kiln reports too many symlinks): such a scratch goes in /tmp.
const linked = new Set(['etc', 'usr', 'var', 'boot']);
const work = mkdtempSync(join(linked.has(tmpdir().split('/')[1] ?? '') ? '/tmp' : tmpdir(), 'kiln-tree-links-'));
const root = join(work, 'tree');
const host = join(work, 'host');
after(() => rmSync(work, { recursive: true, force: true }));

/** Host files the links aim at, with their content, to check nothing changed. */
const CANARIES: Record<string, string> = {
  'etc/shadow': 'root:host-hash:1:0:99999:7:::\n',
  'etc/os-release': 'ID=host-os\n',
  'boot/grub/grub.cfg': 'host grub\n',
  'etc/fstab': 'host fstab\n',
  'usr/sbin/policy-rc.d': 'host policy\n',
  'var/tmp/.kiln-ansible/keep': 'host temp\n',
  'var/lib/dpkg/status': 'Package: host-only-package\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n',
  'etc/hostname': 'build-host\n',
};

function hostState(): Record<string, string> {
  return Object.fromEntries(Object.keys(CANARIES).map((f) => [f, readFileSync(join(host, f), 'utf8')]));
}

beforeEach(() => {
  rmSync(work, { recursive: true, force: true });
  for (const [f, text] of Object.entries(CANARIES)) {
    mkdirSync(join(host, f, '..'), { recursive: true });
    writeFileSync(join(host, f), text);
  }
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'usr/lib'), { recursive: true });
  writeFileSync(join(root, 'usr/lib/os-release'), 'ID=debian\n');
  // The planted links: absolute ones at host paths, relative ones climbing out with ../
  symlinkSync(join(host, 'etc/shadow'), join(root, 'etc/release'));
  symlinkSync(join(host, 'etc/os-release'), join(root, 'etc/os-release'));
  symlinkSync(`${relative(root, host)}/boot`, join(root, 'boot'));
  symlinkSync(`../../../../../../../../..${join(host, 'etc/fstab')}`, join(root, 'etc/fstab'));
  symlinkSync(join(host, 'usr'), join(root, 'usr/sbin'));
  symlinkSync(join(host, 'var'), join(root, 'var'));
  symlinkSync(join(host, 'etc/hostname'), join(root, 'etc/hostname'));
});

test('hostPath and resolvedPath keep every link inside the tree', () => {
  assert.equal(hostPath(root, '/etc/release'), join(root, 'etc/release'), 'the last component is not followed');
  assert.equal(resolvedPath(root, '/etc/release'), join(root, host, 'etc/shadow'), 'an absolute link is read as the image sees it');
  assert.equal(hostPath(root, '/boot/grub/grub.cfg').startsWith(`${root}/`), true, '../ stops at the tree root');
  assert.equal(hostPath(root, '/../../etc/x'), join(root, 'etc/x'));
  assert.throws(() => removeInTree(root, '/etc/..'), /names the image tree itself/);
  assert.throws(() => writeTreeFile(root, '/', 'x'), /names the image tree itself/);
});

test('stamping replaces /etc/release and /etc/os-release in the tree and reads no host file', () => {
  stampTree(root, { name: 'web', version: 'release-0.1.0', commit: 'c'.repeat(40), snapshot: false, sourceDateEpoch: 1 });
  assert.deepEqual(hostState(), CANARIES, 'the host files are unchanged');
  assert.ok(lstatSync(join(root, 'etc/release')).isFile(), 'the link was replaced by a file');
  assert.match(readFileSync(join(root, 'etc/release'), 'utf8'), /^IMAGE_VERSION=release-0\.1\.0$/m);
  const os = readFileSync(join(root, 'etc/os-release'), 'utf8');
  assert.doesNotMatch(os, /host-os/, 'the host os-release was not read');
  assert.match(os, /^IMAGE_ID="web"$/m);
});

test('the image layer and the disk boot files are written inside the tree', () => {
  applyImageLayer(root, { hostname: 'web' });
  writeTreeFile(root, '/boot/grub/grub.cfg', 'kiln grub\n');
  writeTreeFile(root, '/etc/fstab', `${readTreeFile(root, '/etc/fstab') ?? ''}kiln fstab\n`);
  assert.deepEqual(hostState(), CANARIES, 'the host files are unchanged');
  assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'web\n');
  assert.equal(readFileSync(hostPath(root, '/boot/grub/grub.cfg'), 'utf8'), 'kiln grub\n');
  assert.equal(readFileSync(join(root, 'etc/fstab'), 'utf8'), 'kiln fstab\n', 'the link was not read through: its target is outside');
  assert.ok(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/systemd-networkd.service')).startsWith('/lib/systemd'));
});

test('provisioning cleanup removes only inside the tree', () => {
  mkdirInTree(root, '/var/tmp/.kiln-ansible');
  releaseTree(root);
  assert.deepEqual(hostState(), CANARIES, 'the host files are unchanged');
});

test('the package list is the tree\'s own dpkg database, never the host\'s', async () => {
  mkdirInTree(root, '/var/lib/dpkg');
  writeTreeFile(root, '/var/lib/dpkg/status', 'Package: image-package\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n\n');
  const pkgs = await installedPackages(root);
  assert.deepEqual(pkgs.map((p) => p.name), ['image-package']);
  assert.deepEqual(hostState(), CANARIES);
});
