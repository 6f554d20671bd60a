/**
 * A vendor cloud image for the source.image tests, which cannot reach vendors' sites: the root tree
 * of a Kiln image (the shared example build) laid out as Debian's cloud images are (GPT; p14 BIOS
 * boot at sector 2048, p15 ESP at 8192, p1 ext4 root at 262144; fstab by UUID), with the file kinds
 * a lossless ingest must keep planted in it, published as raw, qcow2 and disk.raw in a .tar.gz,
 * with a SHA512SUMS signed by a throwaway OpenPGP key, served by `python3 -m http.server` on 127.0.0.1.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, linkSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { ingestImage } from '../../src/image/ingest.js';
import { silentLogger } from '../../src/log.js';

export const VENDOR_ROOT_UUID = '6f1e7a52-3b4c-4d5e-8f60-718293a4b5c6';
export const VENDOR_ESP_SERIAL = '5EC1A7B2';
export const VENDOR_DISK_GUID = '0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9';

/** Planted files and what the built image must still show of them. */
export const PLANTED = {
  suid: '/usr/local/bin/vendor-suid',
  cap: '/usr/local/bin/vendor-cap',
  linkA: '/usr/local/share/vendor/link-a',
  linkB: '/usr/local/share/vendor/link-b',
  dev: '/usr/local/share/vendor/null-dev',
  acl: '/usr/local/share/vendor/acl-file',
  sticky: '/usr/local/share/vendor/sticky-dir',
};

export interface VendorImage {
  dir: string;
  /** http://127.0.0.1:PORT/ */
  base: string;
  files: { raw: string; qcow2: string; targz: string };
  /** The throwaway vendor key (public, armored) and another key that is not pinned. */
  key: string;
  otherKey: string;
  gnupg: string;
  otherGnupg: string;
  sha512: Record<string, string>;
  server: ChildProcess;
  stop(): void;
}

function sh(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C', ...opts.env }, input: opts.input, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
}

function sha512(file: string): string {
  return sh('sha512sum', [file]).split(' ')[0];
}

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** A throwaway signing key in its own GNUPGHOME; returns the armored public key's path. */
function throwawayKey(home: string, name: string): string {
  rmSync(home, { recursive: true, force: true });
  mkdirSync(home, { recursive: true, mode: 0o700 });
  sh('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-generate-key', `${name} <${name}@vendor.test>`, 'ed25519', 'sign', 'never'], { env: { GNUPGHOME: home } });
  const pub = join(home, `${name}.asc`);
  writeFileSync(pub, sh('gpg', ['--armor', '--export'], { env: { GNUPGHOME: home } }));
  return pub;
}

/** Signs file with the key in home: a detached binary signature at <file>.sign. */
export function signDetached(home: string, file: string, out = `${file}.sign`): void {
  rmSync(out, { force: true });
  sh('gpg', ['--batch', '--yes', '--detach-sign', '--output', out, file], { env: { GNUPGHOME: home } });
}

export async function makeVendorImage(fromRaw: string, dir: string): Promise<VendorImage> {
  rmSync(dir, { recursive: true, force: true });
  const work = join(dir, 'work');
  const pub = join(dir, 'pub');
  mkdirSync(work, { recursive: true });
  mkdirSync(pub, { recursive: true });
  // The Kiln image's root tree, read losslessly (the code under test reads it the same way; here it is only the fixture's input).
  const tar = join(work, 'tree.tar');
  await ingestImage({ file: fromRaw, shown: fromRaw, scratch: join(work, 'scratch'), out: tar, logger: silentLogger });
  const tree = join(work, 'tree');
  mkdirSync(tree);
  sh('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '-xpf', tar, '-C', tree]);
  rmSync(tar);
  const at = (p: string) => join(tree, p);
  mkdirSync(at('/usr/local/share/vendor'), { recursive: true });
  copyFileSync(at('/usr/bin/true'), at(PLANTED.suid));
  chmodSync(at(PLANTED.suid), 0o4755);
  copyFileSync(at('/usr/bin/true'), at(PLANTED.cap));
  sh('setcap', ['cap_net_raw+ep', at(PLANTED.cap)]);
  writeFileSync(at(PLANTED.linkA), 'one inode, two names\n');
  linkSync(at(PLANTED.linkA), at(PLANTED.linkB));
  sh('mknod', ['-m', '0640', at(PLANTED.dev), 'c', '1', '3']);
  writeFileSync(at(PLANTED.acl), 'readable by uid 4242 through an ACL\n');
  sh('setfacl', ['-m', 'u:4242:r', at(PLANTED.acl)]);
  mkdirSync(at(PLANTED.sticky));
  chmodSync(at(PLANTED.sticky), 0o1777);
  mkdirSync(at('/boot/efi'), { recursive: true });
  // Debian's cloud fstab: the root and the ESP by UUID, the root with growfs.
  writeFileSync(at('/etc/fstab'), `# /etc/fstab: static file system information.\nUUID=${VENDOR_ROOT_UUID} / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1\nUUID=${VENDOR_ESP_SERIAL.slice(0, 4)}-${VENDOR_ESP_SERIAL.slice(4)} /boot/efi vfat umask=0077 0 1\n`);

  // Debian's layout on a 2 GiB disk: p14 BIOS boot (3 MiB at 1 MiB), p15 ESP (124 MiB at 4 MiB), p1 root from 128 MiB.
  const size = 2048 * 1024 * 1024;
  const raw = join(pub, 'debian-13-genericcloud-amd64.raw');
  const rootImg = join(work, 'root.ext4');
  const espImg = join(work, 'esp.vfat');
  const rootStart = 262144;
  const rootSectors = size / 512 - 34 - rootStart;
  sh('truncate', ['-s', String(rootSectors * 512), rootImg]);
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-U', VENDOR_ROOT_UUID, '-L', 'vendor-root', '-d', tree, rootImg]);
  sh('mkfs.vfat', ['-C', '-i', VENDOR_ESP_SERIAL, '-F', '32', '-n', 'UEFI', espImg, String((253952 * 512) / 1024)]);
  writeFileSync(join(work, 'BOOTX64.EFI'), 'not a real loader: Kiln writes its own\n');
  sh('mmd', ['-i', espImg, '::/EFI', '::/EFI/BOOT'], { env: { MTOOLS_SKIP_CHECK: '1' } });
  sh('mcopy', ['-i', espImg, join(work, 'BOOTX64.EFI'), '::/EFI/BOOT/BOOTX64.EFI'], { env: { MTOOLS_SKIP_CHECK: '1' } });
  sh('truncate', ['-s', String(size), raw]);
  sh('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', raw], {
    input: [
      'label: gpt', `label-id: ${VENDOR_DISK_GUID}`, 'unit: sectors', 'first-lba: 34', '',
      `p1 : start=${rootStart}, size=${rootSectors}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"`,
      'p14 : start=2048, size=6144, type=21686148-6449-6E6F-744E-656564454649, name="bios"',
      'p15 : start=8192, size=253952, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"', '',
    ].join('\n'),
  });
  sh('dd', [`if=${espImg}`, `of=${raw}`, 'bs=512', 'seek=8192', 'conv=notrunc,sparse', 'status=none']);
  sh('dd', [`if=${rootImg}`, `of=${raw}`, 'bs=1M', `seek=${rootStart * 512}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
  rmSync(work, { recursive: true, force: true });

  const qcow2 = join(pub, 'debian-13-genericcloud-amd64.qcow2');
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  const targz = join(pub, 'debian-13-gce-amd64.tar.gz');
  // GCE's layout: a sparse GNU tar holding disk.raw.
  const gce = join(dir, 'gce');
  mkdirSync(gce);
  sh('cp', ['--sparse=always', raw, join(gce, 'disk.raw')]);
  sh('tar', ['--format=oldgnu', '-Sczf', targz, '-C', gce, 'disk.raw']);
  rmSync(gce, { recursive: true, force: true });

  const gnupg = join(dir, 'gnupg-vendor');
  const otherGnupg = join(dir, 'gnupg-other');
  const key = throwawayKey(gnupg, 'vendor');
  const otherKey = throwawayKey(otherGnupg, 'other');
  const sums: Record<string, string> = {};
  for (const f of [raw, qcow2, targz]) sums[f.split('/').pop() as string] = sha512(f);
  writeFileSync(join(pub, 'SHA512SUMS'), Object.entries(sums).map(([n, h]) => `${h}  ${n}\n`).join(''));
  signDetached(gnupg, join(pub, 'SHA512SUMS'));

  const port = await freePort();
  const server = spawn('/usr/bin/python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', pub, String(port)], { stdio: 'ignore' });
  const base = `http://127.0.0.1:${port}/`;
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`${base}SHA512SUMS`)).ok) break; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    dir, base, files: { raw, qcow2, targz }, key, otherKey, gnupg, otherGnupg, sha512: sums, server,
    // gpg started an agent for each throwaway home; it would outlive the suite.
    stop: () => { server.kill(); for (const home of [gnupg, otherGnupg]) spawnSync('gpgconf', ['--homedir', home, '--kill', 'gpg-agent'], { stdio: 'ignore' }); },
  };
}
