import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as openpgp from 'openpgp';
import { PART_TYPE, planVendorPartitions, sfdiskScript } from '../../src/disk/gpt.js';
import { fstab } from '../../src/disk/bootconfig.js';
import { KilnError } from '../../src/errors.js';
import { diskMember, fatLabel, fatSerial, isArchive } from '../../src/image/ingest.js';
import { silentLogger } from '../../src/log.js';
import { checksumFor, parseChecksums, readPinnedKeys, verifyChecksumFile } from '../../src/source/checksums.js';
import { fetchVerifiedImage, type ImageSourceConfig } from '../../src/source/image.js';
import { loadTemplate, parseTemplate, TemplateError } from '../../src/template/load.js';
import { lineageOf } from '../../src/pipeline/steps/stamp.js';
import { parseKeyValues, releaseFile } from '../../src/image/stamp.js';
import { rootOf } from '../../src/source/release.js';
import type { ReleaseRecord } from '../../src/store/record.js';

const A = 'a'.repeat(128);
const B = 'b'.repeat(64);

describe('checksum files', () => {
  test('GNU and BSD lines are read; the image is found by its base name', () => {
    const e = parseChecksums(`${A}  debian-13-genericcloud-amd64.qcow2\n${B} *./other.raw\n\nSHA512 (x.tar.xz) = ${'c'.repeat(128)}\n`, 'SHA512SUMS');
    assert.deepEqual(e.map((x) => [x.name, x.algorithm]), [['debian-13-genericcloud-amd64.qcow2', 'sha512'], ['other.raw', 'sha256'], ['x.tar.xz', 'sha512']]);
    assert.equal(checksumFor(e, 'debian-13-genericcloud-amd64.qcow2', 'SHA512SUMS').hex, A);
  });

  test('a line that is not a checksum is an error naming the file and line, never skipped', () => {
    assert.throws(() => parseChecksums(`${A}  ok.raw\n<html>not found</html>\n`, 'SHA512SUMS'), (e: KilnError) => /^SHA512SUMS:2: not a SHA-256 or SHA-512 checksum line/.test(e.format()));
    assert.throws(() => parseChecksums('abc123  short.raw\n', 'S'), (e: KilnError) => e.format().startsWith('S:1: '));
  });

  test('an image the file does not list, or lists twice with different digests, is refused', () => {
    const e = parseChecksums(`${A}  a.raw\n${'d'.repeat(128)}  a.raw\n`, 'S');
    assert.throws(() => checksumFor(e, 'a.raw', 'S'), /more than one sha512 digest \(lines 1, 2\)/);
    assert.throws(() => checksumFor(e, 'b.raw', 'S'), /lists no checksum for b\.raw/);
  });
});

describe('the signature on a checksum file', () => {
  let vendor: openpgp.PrivateKey;
  let other: openpgp.PrivateKey;
  let vendorPub: openpgp.PublicKey[];
  const sums = new TextEncoder().encode(`${A}  image.qcow2\n`);
  before(async () => {
    const mk = async (name: string) => (await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ name, email: `${name}@vendor.test` }], format: 'object' })).privateKey;
    vendor = await mk('vendor');
    other = await mk('other');
    vendorPub = await readPinnedKeys([{ file: 'vendor.asc', bytes: new TextEncoder().encode(vendor.toPublic().armor()) }]);
  });
  const detached = async (key: openpgp.PrivateKey, data: Uint8Array) => openpgp.sign({ message: await openpgp.createMessage({ binary: data }), signingKeys: key, detached: true, format: 'binary' }) as Promise<Uint8Array>;

  test('a detached signature (binary or armored) by the pinned key verifies and names the signer', async () => {
    const sig = await detached(vendor, sums);
    const r = await verifyChecksumFile({ file: sums, shown: 'SHA512SUMS', signature: sig, keys: vendorPub });
    assert.equal(r.signer, vendor.getFingerprint().toUpperCase());
    assert.equal(r.text, `${A}  image.qcow2\n`);
    const armored = new TextEncoder().encode(await openpgp.sign({ message: await openpgp.createMessage({ binary: sums }), signingKeys: vendor, detached: true }) as string);
    assert.equal((await verifyChecksumFile({ file: sums, shown: 'S', signature: armored, keys: vendorPub })).signer, r.signer);
  });

  test('a clear-signed checksum file verifies, and only its signed text is read', async () => {
    const signed = await openpgp.sign({ message: await openpgp.createCleartextMessage({ text: `${A}  image.qcow2` }), signingKeys: vendor });
    const r = await verifyChecksumFile({ file: new TextEncoder().encode(signed as string), shown: 'SHA512SUMS', keys: vendorPub });
    assert.equal(parseChecksums(r.text, 'S')[0].hex, A);
  });

  test('one flipped byte in the file, a signature by another key, or no signature is refused', async () => {
    const sig = await detached(vendor, sums);
    const flipped = Uint8Array.from(sums);
    flipped[3] ^= 1;
    await assert.rejects(verifyChecksumFile({ file: flipped, shown: 'SHA512SUMS', signature: sig, keys: vendorPub }), (e: KilnError) => /^SHA512SUMS: no valid signature by a pinned key/.test(e.format()));
    await assert.rejects(verifyChecksumFile({ file: sums, shown: 'SHA512SUMS', signature: await detached(other, sums), keys: vendorPub }), (e: KilnError) => /no valid signature by a pinned key/.test(e.message) && new RegExp(other.getKeyID().toHex(), 'i').test(e.detail ?? ''));
    await assert.rejects(verifyChecksumFile({ file: sums, shown: 'SHA512SUMS', keys: vendorPub }), /no signature/);
  });

  test('a key file that is not a key is an error naming it', async () => {
    await assert.rejects(readPinnedKeys([{ file: 'keys/vendor.asc', bytes: new TextEncoder().encode('-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n-----END PGP PUBLIC KEY BLOCK-----\n') }]), /keys\/vendor\.asc is not an OpenPGP public key/);
  });
});

describe('fetching and verifying an image (a local HTTP server)', () => {
  let dir: string;
  let server: Server;
  let base: string;
  const body = Buffer.from('pretend disk image bytes\n'.repeat(1000));
  const sha = (alg: string, b: Buffer) => execFileSync(`${alg}sum`, { input: b, encoding: 'utf8' }).split(' ')[0];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kiln-image-'));
    server = createServer((req, res) => {
      if (req.url === '/image.raw') { res.end(body); return; }
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  });
  after(() => { server.close(); rmSync(dir, { recursive: true, force: true }); });
  const cfg = (c: Partial<ImageSourceConfig>): ImageSourceConfig => ({ url: `${base}image.raw`, keys: [], verify: true, ...c });
  const req = (c: Partial<ImageSourceConfig>, cache = join(dir, 'cache')) => ({ config: cfg(c), dir, cacheDir: cache, logger: silentLogger });

  test('nothing to verify against is refused, naming what was tried', async () => {
    await assert.rejects(fetchVerifiedImage(req({})), (e: KilnError) => /cannot be verified: nothing to check it against/.test(e.message) && /no sha512 pinned in kiln.yaml/.test(e.detail ?? '') && /no signed checksum file/.test(e.detail ?? ''));
  });

  test('a pinned sha512 verifies; the file is cached under its sha256 and reused by that digest', async () => {
    const cache = join(dir, 'c1');
    const r = await fetchVerifiedImage(req({ sha512: sha('sha512', body) }, cache));
    assert.equal(r.verified, true);
    assert.deepEqual(r.checks, ['sha512 pinned in kiln.yaml']);
    assert.equal(readFileSync(r.file).equals(body), true);
    const again = await fetchVerifiedImage(req({ sha256: sha('sha256', body), sha512: sha('sha512', body) }, cache));
    assert.equal(again.cached, true);
  });

  test('a pin that does not match refuses the image and caches nothing', async () => {
    const cache = join(dir, 'c2');
    await assert.rejects(fetchVerifiedImage(req({ sha512: 'f'.repeat(128) }, cache)), (e: KilnError) => /does not match: sha512 pinned in kiln.yaml/.test(e.message) && e.detail!.includes(sha('sha512', body)));
    assert.deepEqual(readdirNames(join(cache, 'images')), []);
  });

  test("kiln.lock's pins are checks too: alone they verify (the cached entry by its sha256); a lock naming other bytes refuses the image", async () => {
    const cache = join(dir, 'c-lock');
    const locked = { sha256: sha('sha256', body), sha512: sha('sha512', body) };
    const r = await fetchVerifiedImage({ ...req({}, cache), locked });
    assert.equal(r.verified, true);
    assert.deepEqual(r.checks, ['sha256 pinned in kiln.lock', 'sha512 pinned in kiln.lock']);
    const again = await fetchVerifiedImage({ ...req({ sha512: locked.sha512 }, cache), locked });
    assert.equal(again.cached, true);
    assert.deepEqual(again.checks, ['sha512 pinned in kiln.yaml', 'sha256 pinned in kiln.lock', 'sha512 pinned in kiln.lock']);
    // kiln.yaml's pin passes, kiln.lock's does not: every check must pass, so the image is refused (and the cache entry is not the lock's).
    const other = { sha256: 'a'.repeat(64), sha512: 'b'.repeat(128) };
    await assert.rejects(fetchVerifiedImage({ ...req({ sha512: locked.sha512 }, join(dir, 'c-lock2')), locked: other }),
      (e: KilnError) => /does not match: sha256 pinned in kiln\.lock; sha512 pinned in kiln\.lock$/.test(e.message) && e.detail!.includes(locked.sha256));
    assert.deepEqual(readdirNames(join(dir, 'c-lock2', 'images')), [], 'nothing cached');
  });

  test('without a lock, the refusal says kiln.lock could pin it', async () => {
    await assert.rejects(fetchVerifiedImage(req({})), (e: KilnError) => /no kiln\.lock pinning the image/.test(e.detail ?? ''));
  });

  test('a damaged cache entry is not used: it is fetched again and checked', async () => {
    const cache = join(dir, 'c3');
    const pin = { sha256: sha('sha256', body) };
    const r = await fetchVerifiedImage(req(pin, cache));
    writeFileSync(r.file, 'swapped');
    const again = await fetchVerifiedImage(req(pin, cache));
    assert.equal(again.cached, false);
    assert.equal(readFileSync(again.file).equals(body), true);
  });

  test('verify: false uses the image unverified, and says so', async () => {
    const r = await fetchVerifiedImage(req({ verify: false }, join(dir, 'c4')));
    assert.equal(r.verified, false);
  });

  test('an unreachable file is a clear error', async () => {
    await assert.rejects(fetchVerifiedImage(req({ url: `${base}missing.raw`, sha256: B }, join(dir, 'c5'))), /cannot fetch image .*missing\.raw: HTTP 404/);
  });
});

function readdirNames(d: string): string[] {
  try { return execFileSync('ls', [d], { encoding: 'utf8' }).split('\n').filter((n) => n && !n.endsWith('.tmp')); } catch { return []; }
}

describe('reading a vendor disk', () => {
  test('archives are told from disks by their first bytes', () => {
    assert.equal(isArchive(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0])), true);
    assert.equal(isArchive(Buffer.from([0x1f, 0x8b, 8, 0])), true);
    const ustar = Buffer.alloc(512);
    ustar.write('ustar', 257, 'latin1');
    assert.equal(isArchive(ustar), true);
    assert.equal(isArchive(Buffer.from('QFI\xfb\0\0\0\x03', 'latin1')), false);
  });

  test("an archive's one disk member is taken; none, several or one climbing out is refused", () => {
    assert.equal(diskMember(['disk.raw'], 'x.tar.gz'), 'disk.raw');
    assert.equal(diskMember(['./README', 'debian-13-nocloud-amd64.raw'], 'x.tar.xz'), 'debian-13-nocloud-amd64.raw');
    assert.throws(() => diskMember(['README'], 'x.tar'), /found 0/);
    assert.throws(() => diskMember(['a.raw', 'b.qcow2'], 'x.tar'), /found 2/);
    assert.throws(() => diskMember(['../../etc/disk.raw'], 'x.tar'), /climbs out/);
    assert.throws(() => diskMember(['/disk.raw'], 'x.tar'), /absolute path/);
  });

  test('the FAT serial and label are read from FAT32 and FAT16 boot sectors as mkfs.vfat makes them', () => {
    const d = mkdtempSync(join(tmpdir(), 'kiln-fat-'));
    try {
      for (const [bits, size] of [['32', '65536'], ['16', '16384']]) {
        const f = join(d, `fat${bits}.img`);
        execFileSync('mkfs.vfat', ['-C', '-i', '5EC1A7B2', '-F', bits, '-n', 'UEFI', f, size], { stdio: 'ignore' });
        const sector = readFileSync(f).subarray(0, 512);
        assert.equal(fatSerial(sector), '5EC1A7B2', `FAT${bits}`);
        assert.equal(fatLabel(sector), 'UEFI', `FAT${bits}`);
        const blkid = execFileSync('blkid', ['-p', '-o', 'value', '-s', 'UUID', f], { encoding: 'utf8' }).trim();
        assert.equal(blkid, '5EC1-A7B2', 'as blkid (and fstab) shows it');
      }
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("the vendor's shape is kept: partition numbers, offsets, GUIDs; the root grows to 1 MiB before the end", () => {
    const shape = {
      diskGuid: '0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9',
      partitions: [
        { index: 1, role: 'root' as const, type: PART_TYPE.rootX86_64, uuid: '11111111-1111-4111-8111-111111111111', name: '', startLba: 262144, sizeLba: 100 },
        { index: 14, role: 'bios' as const, type: PART_TYPE.biosBoot, uuid: '22222222-2222-4222-8222-222222222222', name: '', startLba: 2048, sizeLba: 6144 },
        { index: 15, role: 'esp' as const, type: PART_TYPE.esp, uuid: '33333333-3333-4333-8333-333333333333', name: '', startLba: 8192, sizeLba: 253952 },
      ],
    };
    const plan = planVendorPartitions(3072 * 1024 * 1024, shape);
    assert.equal(plan.root.sizeLba, (3072 - 1) * 2048 - 262144);
    const script = sfdiskScript(plan);
    assert.match(script, /label-id: 0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9/);
    const lines = script.split('\n').filter((l) => l.includes('start='));
    assert.deepEqual(lines.map((l) => l.split(' :')[0]), ['p14', 'p15', 'p1'], 'in disk order, each with its vendor number');
    assert.match(lines[2], /start=262144, size=6027264, type=4F68BCE3-.*uuid=11111111-1111-4111-8111-111111111111/);
    assert.throws(() => planVendorPartitions(128 * 1024 * 1024, shape), /at least 145 MiB/);
    const uefiOnly = planVendorPartitions(3072 * 1024 * 1024, { ...shape, partitions: shape.partitions.filter((p) => p.role !== 'bios') });
    assert.equal(uefiOnly.bios, undefined, 'a UEFI-only vendor disk stays without a BIOS boot partition');
    assert.deepEqual(sfdiskScript(uefiOnly).split('\n').filter((l) => l.includes('start=')).map((l) => l.split(' :')[0]), ['p15', 'p1']);
    assert.throws(() => planVendorPartitions(3072 * 1024 * 1024, { ...shape, partitions: shape.partitions.filter((p) => p.role !== 'esp') }), /no EFI system partition/);
  });

  test("fstab keeps a vendor's root line that names the root by UUID or label, and replaces any other", () => {
    const uuid = '6f1e7a52-3b4c-4d5e-8f60-718293a4b5c6';
    const vendor = `UUID=${uuid} / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1\nUUID=5EC1-A7B2 /boot/efi vfat umask=0077 0 1\n`;
    const kept = fstab(uuid, vendor);
    assert.match(kept, /x-systemd\.growfs/);
    assert.match(kept, /\/boot\/efi/);
    assert.equal(kept.split('\n').filter((l) => / \/ /.test(l)).length, 1);
    assert.match(fstab(uuid, 'LABEL=cloudimg-rootfs / ext4 discard,errors=remount-ro 0 1\n', 'cloudimg-rootfs'), /^LABEL=cloudimg-rootfs \/ ext4 discard/m);
    const replaced = fstab('99999999-9999-4999-8999-999999999999', vendor);
    assert.doesNotMatch(replaced, /growfs/);
    assert.match(replaced, /^UUID=99999999-9999-4999-8999-999999999999 \/ ext4 errors=remount-ro 0 1$/m);
  });
});

describe('kiln.yaml source.image', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-tpl-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'site.yml'), '- hosts: all\n  tasks: []\n');
  const yaml = (image: string) => `name: child\nsource:\n  image:\n${image}provision:\n  playbook: site.yml\n`;

  const problem = (text: string): string => {
    try {
      parseTemplate(text, join(dir, 'kiln.yaml'));
    } catch (e) {
      assert.ok(e instanceof TemplateError, String(e));
      return e.problems.map((p) => `${p.line}: ${p.message}`).join('\n');
    }
    return assert.fail('expected a TemplateError');
  };

  test('a checksum file without keys is refused at its line', () => {
    assert.match(problem(yaml('    url: https://cloud.debian.org/x.qcow2\n    checksums: SHA512SUMS\n')), /^5: source\.image\.checksums needs source\.image\.keys/m);
  });

  test('a missing key file, a malformed digest and an unsupported URL are refused at their lines', () => {
    assert.match(problem(yaml('    url: https://x.test/a.raw\n    checksums: SHA512SUMS\n    keys: [nokey.asc]\n')), /^6: source\.image\.keys: key file not found: nokey\.asc/m);
    assert.match(problem(yaml('    url: https://x.test/a.raw\n    sha512: abc\n')), /^5: .*sha512/m);
    assert.match(problem(yaml(`    url: ftp://x.test/a.raw\n    sha256: ${B}\n`)), /^4: .*url/m);
  });

  test('a valid source.image loads, with the archive defaults kept for the tools tree', () => {
    const t = parseTemplate(yaml(`    url: https://x.test/a.raw\n    sha256: ${B}\n`), join(dir, 'kiln.yaml'));
    assert.equal(t.config.source.image?.verify, true);
    assert.equal(t.config.source.debian.mirror, 'http://deb.debian.org/debian');
  });
});

describe('source.release: lineage', () => {
  test('a child stamps its parent, the chain and the root upstream into /etc/release, readable as KEY=value', () => {
    const lineage = lineageOf({
      type: 'release', ref: 'base@stable', store: '/s', parent: { name: 'base', version: 'release-1.0.0', digest: `sha256:${'e'.repeat(64)}`, channel: 'stable' },
      root: { kind: 'vendor-image', uri: 'https://cloud.example/debian.qcow2', digest: { sha256: B } }, ancestry: ['base@release-1.0.0', 'vendor-hardened@release-0.9.0'],
      artifact: { format: 'raw', sha256: B, size: 1 }, signers: [], verified: true, packages: [], baseKey: 'k', baseSha256: B, date: 1, layout: { diskGuid: '', partitions: [], rootFsUuid: '', rootLabel: '', sizeBytes: 0, detail: '' },
    });
    const text = releaseFile({ name: 'app', version: 'release-2.0.0', commit: 'c', snapshot: false, sourceDateEpoch: 5, lineage });
    const { values, problems } = parseKeyValues(text);
    assert.deepEqual(problems, []);
    assert.equal(values.IMAGE_PARENT, 'base@release-1.0.0');
    assert.equal(values.IMAGE_PARENT_DIGEST, `sha256:${'e'.repeat(64)}`);
    assert.equal(values.IMAGE_ANCESTRY, 'base@release-1.0.0 vendor-hardened@release-0.9.0');
    assert.equal(values.IMAGE_ROOT_UPSTREAM, `vendor-image https://cloud.example/debian.qcow2 sha256:${B}`);
  });

  test("an archive build's /etc/release is unchanged: no lineage lines", () => {
    assert.doesNotMatch(releaseFile({ name: 'web', version: 'v', commit: 'c', snapshot: false, sourceDateEpoch: 1 }), /IMAGE_(PARENT|ANCESTRY|ROOT)/);
  });

  test("the root of a parent's chain: its recorded root, else its own vendor image or archive", () => {
    const rec = (source: Record<string, unknown>, root?: ReleaseRecord['root']) => ({ source, ...(root ? { root } : {}) }) as unknown as ReleaseRecord;
    assert.deepEqual(rootOf(rec({ type: 'image', url: 'https://v/x.qcow2', sha256: B, sha512: A })), { kind: 'vendor-image', uri: 'https://v/x.qcow2', digest: { sha256: B, sha512: A } });
    assert.deepEqual(rootOf(rec({ type: 'debian', mirror: 'http://deb.debian.org/debian/', suite: 'trixie', inReleaseSha256: B })), { kind: 'debian-archive', uri: 'http://deb.debian.org/debian/dists/trixie/InRelease', digest: { sha256: B } });
    const root = { kind: 'debian-archive' as const, uri: 'u', digest: { sha256: B } };
    assert.deepEqual(rootOf(rec({ type: 'release' }, root)), root);
  });

  test('kiln.yaml refuses source.image and source.release together, at the release line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-tpl-'));
    try {
      writeFileSync(join(dir, 'site.yml'), '- hosts: all\n  tasks: []\n');
      assert.throws(() => parseTemplate(`name: child\nsource:\n  image:\n    url: https://x.test/a.raw\n    sha256: ${B}\n  release:\n    ref: base@release-1.0.0\nprovision:\n  playbook: site.yml\n`, join(dir, 'kiln.yaml')),
        (e: TemplateError) => e.problems.some((p) => p.line === 7 && /both set/.test(p.message)));
      assert.throws(() => parseTemplate('name: child\nsource:\n  release:\n    ref: "base release"\nprovision:\n  playbook: site.yml\n', join(dir, 'kiln.yaml')), (e: TemplateError) => e.problems.some((p) => p.line === 4));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('examples/family: a hardened base and two applications on it', () => {
  const family = resolve(new URL('../../../examples/family', import.meta.url).pathname);
  test('each kiln.yaml loads; the applications build on base@stable from the store the base releases into', () => {
    const base = loadTemplate(join(family, 'base', 'kiln.yaml'));
    assert.equal(base.config.source.debian.suite, 'trixie');
    assert.equal(base.config.source.release, undefined);
    const baseStore = resolve(base.dir, base.config.release.store);
    for (const app of ['web', 'worker']) {
      const t = loadTemplate(join(family, app, 'kiln.yaml'));
      assert.equal(t.config.source.release?.ref, 'base@stable', app);
      assert.equal(resolve(t.dir, t.config.source.release?.store ?? ''), baseStore, `${app} reads the base's store`);
      assert.equal(resolve(t.dir, t.config.release.store), baseStore, `${app} releases beside it, so the family shows in one tree`);
    }
  });

  test('the hardening role covers sysctl, firewall, login and SSH policy, module blacklist and mount options', () => {
    const tasks = readFileSync(join(family, 'base', 'roles', 'hardening', 'tasks', 'main.yml'), 'utf8');
    for (const what of ['/etc/sysctl.d/', '/etc/nftables.conf', '/etc/login.defs', '/etc/ssh/sshd_config.d/', '/etc/modprobe.d/', '/etc/fstab']) assert.ok(tasks.includes(what), what);
  });
});
