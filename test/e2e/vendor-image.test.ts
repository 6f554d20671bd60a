/**
 * source.image end to end. Vendors' sites are out of reach, so the upstream is a fixture in Debian's
 * cloud layout made from the example build's own disk (vendor-fixture.ts), served over HTTP on
 * 127.0.0.1 with a SHA512SUMS signed by a throwaway key. Two children of the same tag are built at
 * once: one from the qcow2 over HTTP, verified by the signed checksum file; one from the GCE-style
 * disk.raw in a .tar.gz by file://, verified by a pinned sha512. Both must read the same base tree,
 * byte for byte; a second build of the first repository's tag must give a bit-identical disk; the planted setuid binary, capability xattr,
 * hard link pair, device node, ACL and sticky directory must come through unchanged; the vendor's
 * partition numbers, offsets, GUIDs, UUIDs and labels are kept; the child boots under BIOS and UEFI
 * and reports its version. Then what must be refused is: one flipped byte in the image, one in the
 * checksum file, a signature by another key, and no verification at all.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { withMountedFilesystem } from '../../src/image/mount.js';
import { bootVm, type RunningVm } from '../../src/vm/qemu.js';
import { E2E_DIR, RUN_ID, artifact, builtExample, git, kiln, mountsUnder, readFromDisk, type BuildRecordLite } from './fixture.js';
import { makeVendorImage, PLANTED, signDetached, VENDOR_DISK_GUID, VENDOR_ESP_SERIAL, VENDOR_ROOT_UUID, type VendorImage } from './vendor-fixture.js';

const TAG = 'release-0.3.0';
const NEWER = 'release-0.3.1';
const PLAYBOOK = `- hosts: all
  gather_facts: false
  tasks:
    - name: the child's own file
      ansible.builtin.copy:
        dest: /etc/vendor-child.conf
        content: "built on the vendor image\\n"
        mode: "0644"
`;

interface Rec extends BuildRecordLite { source: BuildRecordLite['source'] & { type?: string; checks?: string[]; sha256?: string; signer?: string; sha512?: string; baseSha256?: string; layout?: { partitions: { index: number; role: string }[] } } }

/** A repository building the child from the given source.image block. */
function childRepo(name: string, imageYaml: string, files: Record<string, string> = {}, opts: { tag?: string; extra?: string; source?: string; playbook?: string; imageName?: string } = {}): string {
  const dir = join(E2E_DIR, RUN_ID, 'vendor repos', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'kiln.yaml'), `name: ${opts.imageName ?? 'vendor-child'}\nsource:\n${opts.source ?? `  image:\n${imageYaml}`}provision:\n  playbook: site.yml\ndisk:\n  size: 2GiB\nformats: [raw, qcow2]\n${opts.extra ?? ''}`);
  writeFileSync(join(dir, 'site.yml'), opts.playbook ?? PLAYBOOK);
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'add', '-A');
  execFileSync('git', ['-C', dir, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', 'commit', '-qm', 'child'], { env: { ...process.env, GIT_AUTHOR_DATE: '2026-11-20T12:00:00Z', GIT_COMMITTER_DATE: '2026-11-20T12:00:00Z' } });
  if (opts.tag !== '') git(dir, 'tag', opts.tag ?? TAG);
  return dir;
}

/** `kiln lock` in a repository made by childRepo with tag '', then kiln.lock committed and the tag set: a locked release build. */
async function lockAndTag(dir: string, tag: string): Promise<string> {
  const r = await kiln(['lock'], { cwd: dir });
  assert.equal(r.code, 0, `kiln lock in ${dir}:\n${r.stderr.slice(-4000)}`);
  git(dir, 'add', '-A');
  execFileSync('git', ['-C', dir, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', 'commit', '-qm', 'kiln.lock'], { env: { ...process.env, GIT_AUTHOR_DATE: '2026-11-20T12:00:00Z', GIT_COMMITTER_DATE: '2026-11-20T12:00:00Z' } });
  git(dir, 'tag', tag);
  return readFileSync(join(dir, 'kiln.lock'), 'utf8');
}

async function hashOf(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** What a planted file is, as the kernel shows it through fuse2fs: type, mode, owner, links, device, size, content, capability, ACL. */
function describeFile(root: string, path: string): string {
  const p = join(root, path);
  const stat = execFileSync('stat', ['-c', '%F %a %u:%g links=%h dev=%t:%T size=%s', p], { encoding: 'utf8' }).trim();
  const isFile = stat.startsWith('regular');
  const sum = isFile ? execFileSync('sha256sum', [p], { encoding: 'utf8' }).split(' ')[0] : '-';
  const cap = isFile ? execFileSync('getcap', [p], { encoding: 'utf8' }).trim().split(' ').slice(1).join(' ') : '';
  const acl = execFileSync('getfacl', ['-n', '--omit-header', '-p', p], { encoding: 'utf8' }).trim().replace(/\n+/g, ',');
  return `${stat} sha256=${sum} cap=[${cap}] acl=[${acl}]`;
}

async function plantedOn(raw: string, scratch: string): Promise<Record<string, string> & { sameInode: string }> {
  const offset = 262144 * 512;
  return withMountedFilesystem(raw, offset, scratch, async (t) => {
    const out: Record<string, string> = {};
    for (const [k, p] of Object.entries(PLANTED)) out[k] = describeFile(t.root, p);
    const ino = (p: string) => execFileSync('stat', ['-c', '%i', join(t.root, p)], { encoding: 'utf8' }).trim();
    return { ...out, sameInode: String(ino(PLANTED.linkA) === ino(PLANTED.linkB)) };
  });
}

describe('source.image: a vendor cloud image, verified, customised losslessly, booted', () => {
  let vendor: VendorImage;
  let signedRepo: string;
  let pinnedRepo: string;
  let signed: Rec;
  let pinned: Rec;
  let signedStderr = '';
  let signedLock = '';
  const scratch = join(E2E_DIR, RUN_ID, 'vendor-scratch');

  before(async () => {
    const example = await builtExample();
    vendor = await makeVendorImage(artifact(example, 'raw'), join(E2E_DIR, RUN_ID, 'vendor'));
    signedRepo = childRepo('signed', `    url: ${vendor.base}debian-13-genericcloud-amd64.qcow2\n    checksums: SHA512SUMS\n    signature: SHA512SUMS.sign\n    keys: [vendor.asc]\n`, { 'vendor.asc': readFileSync(vendor.key, 'utf8') }, { tag: '' });
    // Locked: kiln.lock pins the image's digests, and the build checks them besides the signed SHA512SUMS.
    signedLock = await lockAndTag(signedRepo, TAG);
    // A newer release of the same image in the same store: the base the applications below go out of date against.
    pinnedRepo = childRepo('pinned', `    url: file://${vendor.files.targz}\n    sha512: ${vendor.sha512['debian-13-gce-amd64.tar.gz']}\n`, {}, { tag: NEWER, extra: `release:\n  store: ${JSON.stringify(join(signedRepo, '.kiln', 'store'))}\n` });
    // Both at once: each build is mostly one busy core.
    const [a, b] = await Promise.all([kiln(['build', '--json'], { cwd: signedRepo }), kiln(['build', '--json'], { cwd: pinnedRepo })]);
    assert.equal(a.code, 0, `the build from the signed qcow2 failed:\n${a.stderr.slice(-5000)}`);
    assert.equal(b.code, 0, `the build from the pinned tar.gz failed:\n${b.stderr.slice(-5000)}`);
    signed = JSON.parse(a.stdout) as Rec;
    pinned = JSON.parse(b.stdout) as Rec;
    signedStderr = a.stderr;
  });
  after(() => { vendor?.stop(); rmSync(scratch, { recursive: true, force: true }); });

  test('the qcow2 over HTTP verified by the checksum file signed with the pinned key; the tar.gz by its pinned sha512', () => {
    assert.equal(signed.source.type, 'image');
    assert.equal(signed.source.verified, true);
    const fpr = execFileSync('gpg', ['--with-colons', '--fingerprint'], { encoding: 'utf8', env: { ...process.env, GNUPGHOME: vendor.gnupg } }).split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9];
    assert.deepEqual(signed.source.checks, ['sha256 pinned in kiln.lock', 'sha512 pinned in kiln.lock', `sha512 from SHA512SUMS signed by ${fpr}`]);
    assert.equal(signed.source.sha512, vendor.sha512['debian-13-genericcloud-amd64.qcow2']);
    assert.match(signedStderr, /verified: sha256 pinned in kiln\.lock; sha512 pinned in kiln\.lock; sha512 from SHA512SUMS signed by/);
    assert.deepEqual(pinned.source.checks, ['sha512 pinned in kiln.yaml']);
    assert.match(JSON.stringify(pinned.source), /disk\.raw in a tar archive/);
  });

  test('kiln lock pinned the verified image: its URL, sha256 and sha512, the ones the build verified', () => {
    const m = /^ {2}image: \{ url: "([^"]+)", sha256: "([0-9a-f]{64})", sha512: "([0-9a-f]{128})", size: (\d+) \}$/m.exec(signedLock);
    assert.ok(m, signedLock);
    assert.deepEqual(m.slice(1), [`${vendor.base}debian-13-genericcloud-amd64.qcow2`, signed.source.sha256, vendor.sha512['debian-13-genericcloud-amd64.qcow2'], String(statSync(vendor.files.qcow2).size)]);
    assert.match(signedLock, /^lock: 3$/m);
  });

  test('the same vendor disk read from the .tar.gz and from the qcow2 gives the same base tree, byte for byte', () => {
    assert.ok(signed.source.baseSha256 && pinned.source.baseSha256);
    assert.notEqual(signed.source.sha512, pinned.source.sha512, 'two different upstream files');
    assert.equal(pinned.source.baseSha256, signed.source.baseSha256);
  });

  test('a second build of the same tag and lock (a clone of the repository) gives a bit-identical raw disk', async () => {
    const clone = join(E2E_DIR, RUN_ID, 'vendor repos', 'signed-again');
    rmSync(clone, { recursive: true, force: true });
    execFileSync('git', ['clone', '-q', signedRepo, clone]);
    git(clone, 'checkout', '-q', TAG);
    const r = await kiln(['build', '--json'], { cwd: clone });
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const again = JSON.parse(r.stdout) as Rec;
    const a = await hashOf(signed.artifacts.find((x) => x.format === 'raw')!.file);
    const b = await hashOf(again.artifacts.find((x) => x.format === 'raw')!.file);
    assert.equal(b, a, 'provisioned, sealed and assembled again: the same bytes');
    assert.equal(a, signed.artifacts.find((x) => x.format === 'raw')!.sha256, "and the digest Kiln recorded is the file's");
  });

  test("the vendor's partition table shape, disk GUID, filesystem UUIDs and labels are kept", () => {
    const raw = signed.artifacts.find((x) => x.format === 'raw')!.file;
    const dump = execFileSync('sfdisk', ['-d', raw], { encoding: 'utf8' });
    assert.match(dump, new RegExp(`label-id: ${VENDOR_DISK_GUID}`));
    for (const [n, start] of [[14, 2048], [15, 8192], [1, 262144]]) assert.match(dump, new RegExp(`\\.raw${n} : start=\\s*${start},`), `partition ${n} at sector ${start}`);
    const blkid = (o: number) => execFileSync('blkid', ['-p', '-O', String(o * 512), '-o', 'export', raw], { encoding: 'utf8' });
    assert.match(blkid(262144), new RegExp(`^UUID=${VENDOR_ROOT_UUID}$`, 'm'));
    assert.match(blkid(262144), /^LABEL=vendor-root$/m);
    assert.match(blkid(8192), new RegExp(`^UUID=${VENDOR_ESP_SERIAL.slice(0, 4)}-${VENDOR_ESP_SERIAL.slice(4)}$`, 'm'));
    assert.match(blkid(8192), /^LABEL=UEFI$/m);
  });

  test('setuid, capability, hard links, device node, ACL and sticky bit come through unchanged', async () => {
    const before = await plantedOn(vendor.files.raw, join(scratch, 'a'));
    const built = await plantedOn(signed.artifacts.find((x) => x.format === 'raw')!.file, join(scratch, 'b'));
    assert.deepEqual(built, before);
    assert.match(built.suid, /^regular file 4755 0:0/);
    assert.match(built.cap, /cap=\[cap_net_raw=ep\]/);
    assert.equal(built.sameInode, 'true', 'the hard link pair is still one inode');
    assert.match(built.linkA, /links=2/);
    assert.match(built.dev, /^character special file 640 0:0 links=1 dev=1:3/);
    assert.match(built.acl, /user:4242:r--/);
    assert.match(built.sticky, /^directory 1777/);
  });

  describe('boots under BIOS (raw) and UEFI (qcow2)', () => {
    const vms: Partial<Record<'bios' | 'uefi', RunningVm>> = {};
    before(async () => {
      const [bios, uefi] = await Promise.all([
        bootVm({ image: signed.artifacts.find((x) => x.format === 'raw')!.file, firmware: 'bios', cpus: 1, mac: '52:54:00:4b:00:31', timeoutSec: 480 }),
        bootVm({ image: signed.artifacts.find((x) => x.format === 'qcow2')!.file, firmware: 'uefi', cpus: 1, mac: '52:54:00:4b:00:32', timeoutSec: 480 }),
      ]);
      vms.bios = bios;
      vms.uefi = uefi;
    });
    after(async () => { await Promise.all(Object.values(vms).map((v) => v?.stop())); });
    for (const fw of ['bios', 'uefi'] as const) {
      test(`under ${fw.toUpperCase()}: its version, the vendor's root by UUID with its fstab options, the ESP mounted, the child's file`, async () => {
        const vm = vms[fw]!;
        const out = (await vm.ssh('test -d /sys/firmware/efi && echo uefi || echo bios; . /etc/os-release; echo "$IMAGE_ID $IMAGE_VERSION"; findmnt -n -o UUID,OPTIONS /; findmnt -n -o UUID /boot/efi; cat /etc/vendor-child.conf')).stdout.split('\n');
        assert.equal(out[0], fw);
        assert.equal(out[1], `vendor-child ${TAG}`);
        assert.match(out[2], new RegExp(`^${VENDOR_ROOT_UUID}\\s+.*discard`));
        assert.equal(out[3].trim(), `${VENDOR_ESP_SERIAL.slice(0, 4)}-${VENDOR_ESP_SERIAL.slice(4)}`);
        assert.equal(out[4], 'built on the vendor image');
      });
    }
  });

  describe('source.release: two applications on the vendor-child base (three stages: vendor image, base, apps)', () => {
    let store: string;
    let appA: Rec & { release?: { digest: string } };
    let appB: Rec & { release?: { digest: string } };
    let appBDir: string;
    let appBLock: string;
    let baseDigest: string;
    const APP_PLAYBOOK = PLAYBOOK.replace('/etc/vendor-child.conf', '/etc/app.conf').replace('built on the vendor image', 'an application');
    const releases = async (...args: string[]) => {
      const r = await kiln(['releases', ...args, '--store', store], { cwd: signedRepo });
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    };
    const status = async (name: string) => (JSON.parse(await releases('--json')) as { name: string; version: string; status: string; reason?: string; parent?: string }[]).find((x) => x.name === name);
    before(async () => {
      store = join(signedRepo, '.kiln', 'store');
      const set = await kiln(['channel', 'set', 'stable', `vendor-child@${TAG}`, '--store', store], { cwd: signedRepo });
      assert.equal(set.code, 0, set.stderr);
      const app = (name: string, ref: string, tag = 'release-1.0.0') => childRepo(name, '', {}, {
        imageName: name, tag, playbook: APP_PLAYBOOK,
        source: `  release:\n    ref: ${ref}\n    store: ${JSON.stringify(store)}\n`, extra: `release:\n  store: ${JSON.stringify(store)}\n`,
      });
      // app-b names its parent by a channel and is locked: kiln.lock pins the release the channel pointed at.
      appBDir = app('app-b', 'vendor-child@stable', '');
      appBLock = await lockAndTag(appBDir, 'release-1.0.0');
      const [a, b] = await Promise.all([kiln(['build', '--json'], { cwd: app('app-a', `vendor-child@${TAG}`) }), kiln(['build', '--json'], { cwd: appBDir })]);
      assert.equal(a.code, 0, `app-a:\n${a.stderr.slice(-4000)}`);
      assert.equal(b.code, 0, `app-b:\n${b.stderr.slice(-4000)}`);
      appA = JSON.parse(a.stdout) as typeof appA;
      appB = JSON.parse(b.stdout) as typeof appB;
      baseDigest = signed.release!.digest;
    });

    test("the child's disk has its parent's tree and its own; /etc/release names the parent, the chain and the vendor image at the root", async () => {
      const raw = appA.artifacts.find((x) => x.format === 'raw')!.file;
      assert.equal(await readFromDisk(raw, '/etc/vendor-child.conf'), 'built on the vendor image\n', "the parent's playbook output");
      assert.equal(await readFromDisk(raw, '/etc/app.conf'), 'an application\n');
      const rel = await readFromDisk(raw, '/etc/release');
      assert.match(rel, new RegExp(`^IMAGE_PARENT=vendor-child@${TAG}$`, 'm'));
      assert.match(rel, new RegExp(`^IMAGE_PARENT_DIGEST=${baseDigest}$`, 'm'));
      assert.match(rel, new RegExp(`^IMAGE_ANCESTRY='vendor-child@${TAG}'$`, 'm'));
      assert.match(rel, new RegExp(`^IMAGE_ROOT_UPSTREAM='vendor-image ${vendor.base}debian-13-genericcloud-amd64.qcow2 sha256:[0-9a-f]{64}'$`, 'm'));
      assert.equal(appA.source.type, 'release');
    });

    test("kiln lock pinned the channel's release by digest, and the locked child was built on it", () => {
      assert.match(appBLock, new RegExp(`^ {2}release: \\{ ref: "vendor-child@stable", name: "vendor-child", version: "${TAG}", digest: "${baseDigest}" \\}$`, 'm'));
      const src = appB.source as { parent?: { version: string; digest: string; channel?: string }; lockSha256?: string };
      assert.deepEqual(src.parent, { name: 'vendor-child', version: TAG, digest: baseDigest, channel: 'stable' });
      assert.equal(src.lockSha256, createHash('sha256').update(appBLock).digest('hex'), "the record names kiln.lock's digest");
    });

    test('the release records the parent and carries the OCI base annotations', () => {
      const index = JSON.parse(readFileSync(join(store, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
      const digest = appA.release!.digest;
      assert.ok(index.manifests.some((m) => m.digest === digest) || existsSync(join(store, 'blobs', 'sha256', digest.slice(7))));
      const manifest = JSON.parse(readFileSync(join(store, 'blobs', 'sha256', digest.slice(7)), 'utf8')) as { annotations?: Record<string, string> };
      assert.equal(manifest.annotations?.['org.opencontainers.image.base.digest'], baseDigest);
      assert.match(manifest.annotations?.['org.opencontainers.image.base.name'] ?? '', new RegExp(`vendor-child.${TAG}`));
    });

    test('a newer base marks the child built on its version out of date; moving the channel marks the other; --tree draws the family', async () => {
      assert.equal((await status('app-a'))?.status, 'out-of-date', `vendor-child@${NEWER} is in the store`);
      assert.equal((await status('app-b'))?.status, 'ok', 'stable still points at its parent');
      const moved = await kiln(['channel', 'set', 'stable', `vendor-child@${NEWER}`, '--store', store], { cwd: signedRepo });
      assert.equal(moved.code, 0, moved.stderr);
      assert.equal((await status('app-b'))?.status, 'out-of-date');
      const tree = (await releases('--tree')).split('\n');
      const indent = (l: string) => l.length - l.trimStart().length;
      const base = tree.findIndex((l) => l.trimStart().startsWith(`vendor-child@${TAG}`));
      assert.ok(base >= 0, tree.join('\n'));
      const family = tree.slice(base + 1, tree.findIndex((l, i) => i > base && indent(l) <= indent(tree[base])) >>> 0);
      for (const app of ['app-a', 'app-b']) assert.ok(family.some((l) => l.trimStart().startsWith(`${app}@release-1.0.0`) && indent(l) > indent(tree[base])), `${app} drawn under its parent:\n${tree.join('\n')}`);
    });

    test('revoking the base makes resolving either application fail, naming the base; a new child on it is refused', async () => {
      const rv = await kiln(['revoke', `vendor-child@${TAG}`, '--reason', 'test: a hardening gap', '--store', store], { cwd: signedRepo });
      assert.equal(rv.code, 0, rv.stderr);
      for (const app of ['app-a', 'app-b']) {
        const r = await kiln(['resolve', `${app}@release-1.0.0`, '--store', store], { cwd: signedRepo });
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, new RegExp(`built on vendor-child@${TAG}, which is revoked: test: a hardening gap`));
      }
      assert.equal((await status('app-a'))?.status, 'ancestor-revoked');
      const c = childRepo('app-c', '', {}, { imageName: 'app-c', tag: 'release-1.0.0', source: `  release:\n    ref: vendor-child@${TAG}\n    store: ${JSON.stringify(store)}\n` });
      const r = await kiln(['build'], { cwd: c });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`vendor-child@${TAG} is revoked: test: a hardening gap`));
    });

    test("a locked child keeps its pinned parent after the channel moved: revoked, it is refused; kiln lock --update moves the pin to the channel's release", async () => {
      // stable points at NEWER now (not revoked): only kiln.lock's pin makes this build reach the revoked release.
      const r = await kiln(['build', '--snapshot', '--no-release'], { cwd: appBDir });
      assert.notEqual(r.code, 0, 'the lock pins the revoked base');
      assert.match(r.stderr, new RegExp(`vendor-child@${TAG} is revoked: test: a hardening gap`));
      const u = await kiln(['lock', '--update'], { cwd: appBDir });
      assert.equal(u.code, 0, u.stderr.slice(-4000));
      assert.match(u.stderr + u.stdout, new RegExp(`~ upstream: vendor-child@${TAG} ${baseDigest} \\(from vendor-child@stable\\) -> vendor-child@${NEWER} sha256:[0-9a-f]{64} \\(from vendor-child@stable\\)`));
      assert.match(readFileSync(join(appBDir, 'kiln.lock'), 'utf8'), new RegExp(`version: "${NEWER}", digest: "${pinned.release!.digest}"`));
    });
  });

  describe('refused before anything is read from the image', () => {
    /** A copy of the published files, one of them changed, served by file:// URLs. */
    function tampered(name: string, change: (dir: string) => void): string {
      const dir = join(E2E_DIR, RUN_ID, 'vendor-tampered', name);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      for (const f of readdirSync(join(vendor.dir, 'pub'))) if (!f.endsWith('.raw') && !f.endsWith('.tar.gz')) copyFileSync(join(vendor.dir, 'pub', f), join(dir, f));
      change(dir);
      return dir;
    }
    async function refused(name: string, dir: string, expect: RegExp): Promise<void> {
      const repo = childRepo(`refused-${name}`, `    url: file://${dir}/debian-13-genericcloud-amd64.qcow2\n    checksums: SHA512SUMS\n    signature: SHA512SUMS.sign\n    keys: [vendor.asc]\n`, { 'vendor.asc': readFileSync(vendor.key, 'utf8') });
      const r = await kiln(['build'], { cwd: repo });
      assert.notEqual(r.code, 0, `${name}: the build must fail`);
      assert.match(r.stderr, expect);
      const index = join(repo, '.kiln', 'store', 'index.json');
      const manifests = existsSync(index) ? (JSON.parse(readFileSync(index, 'utf8')) as { manifests?: unknown[] }).manifests ?? [] : [];
      assert.deepEqual(manifests, [], `${name}: nothing released`);
      assert.deepEqual(existsSync(join(repo, '.kiln', 'work')) ? readdirSync(join(repo, '.kiln', 'work')) : [], [], `${name}: no work area left`);
      assert.deepEqual(mountsUnder(repo), []);
    }

    test('one flipped byte in the image', async () => {
      const dir = tampered('image', (d) => {
        const f = join(d, 'debian-13-genericcloud-amd64.qcow2');
        const fd = readFileSync(f);
        fd[fd.length - 4096] ^= 0x01;
        writeFileSync(f, fd);
      });
      await refused('image', dir, /does not match: sha512 from SHA512SUMS signed by/);
    });

    test('one flipped byte in the checksum file', async () => {
      const dir = tampered('sums', (d) => {
        const f = join(d, 'SHA512SUMS');
        const t = readFileSync(f, 'utf8');
        writeFileSync(f, t.replace(/^(.)/, (c) => (c === 'a' ? 'b' : 'a')));
      });
      await refused('sums', dir, /SHA512SUMS: no valid signature by a pinned key/);
    });

    test('a checksum file signed by another key', async () => {
      const dir = tampered('other-key', (d) => signDetached(vendor.otherGnupg, join(d, 'SHA512SUMS')));
      await refused('other-key', dir, /no valid signature by a pinned key[\s\S]*not pinned|Could not find signing key/);
    });

    test('an image with nothing to verify it against, naming what was tried', async () => {
      const repo = childRepo('refused-unverified', `    url: ${vendor.base}debian-13-genericcloud-amd64.qcow2\n`);
      const r = await kiln(['build'], { cwd: repo });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /cannot be verified: nothing to check it against/);
      assert.match(r.stderr, /no signed checksum file/);
      assert.match(r.stderr, /verify: false/);
    });
  });
});
