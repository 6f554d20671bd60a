/**
 * Is a release's disk fit for EC2? Checked on the finished disk before anything is uploaded, so an
 * AMI that cannot boot on Nitro is refused here with the fix, not found out at launch:
 * - the boot mode the disk supports, from its partition table (a BIOS boot partition and an ESP: both);
 * - root mounted by UUID in /etc/fstab (Nitro presents EBS as NVMe, so device names change);
 * - the NVMe driver and the ENA network driver built into the kernel that /vmlinuz names, or carried
 *   in its initramfs (read here: the newc cpio archives, the compressed one decompressed by the host's
 *   zstd, xz or gzip).
 */
import { closeSync, constants, fstatSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { KilnError } from '../../errors.js';
import { exec } from '../../exec.js';
import { silentLogger, type Logger } from '../../log.js';
import { PART_TYPE } from '../../disk/gpt.js';
import { gptOf, rootOffset } from '../../image/root-fs.js';
import { withMountedFilesystem } from '../../image/mount.js';
import { hostPath, readTreeFile, resolvedPath } from '../../image/tree.js';

export type BootMode = 'uefi-preferred' | 'uefi' | 'legacy-bios';
export const BOOT_MODES: readonly BootMode[] = ['uefi-preferred', 'uefi', 'legacy-bios'];

/** The boot mode a GPT disk supports: a BIOS boot partition and an ESP: uefi-preferred. */
export function bootModeOf(raw: string): BootMode {
  const fd = openSync(raw, 'r');
  try {
    const entries = gptOf(fd)?.entries ?? [];
    const bios = entries.some((p) => p.type === PART_TYPE.biosBoot);
    const esp = entries.some((p) => p.type === PART_TYPE.esp);
    if (bios && esp) return 'uefi-preferred';
    if (esp) return 'uefi';
    return 'legacy-bios';
  } finally {
    closeSync(fd);
  }
}

/** The root entry of an fstab: its source (UUID=…, /dev/…), or undefined when nothing mounts "/". */
export function fstabRoot(fstab: string): string | undefined {
  for (const line of fstab.split('\n')) {
    const f = line.replace(/#.*/, '').trim().split(/\s+/);
    if (f.length >= 2 && f[1] === '/') return f[0];
  }
  return undefined;
}

/** The value of a kernel config option: 'y', 'm', or undefined (not set). */
export function kernelOption(config: string, name: string): 'y' | 'm' | undefined {
  const m = new RegExp(`^${name}=([ym])$`, 'm').exec(config);
  return m ? (m[1] as 'y' | 'm') : undefined;
}

/** The member names of the newc cpio archives at the start of buf, and where they end. */
export function cpioMembers(buf: Buffer, from = 0): { names: string[]; end: number } {
  const names: string[] = [];
  let o = from;
  for (;;) {
    // Archives are padded to 512 bytes (or more) with zeros between them.
    while (o < buf.length && buf[o] === 0) o++;
    const magic = buf.subarray(o, o + 6).toString('latin1');
    if (magic !== '070701' && magic !== '070702') return { names, end: o };
    for (;;) {
      const field = (i: number) => parseInt(buf.subarray(o + 6 + i * 8, o + 14 + i * 8).toString('latin1'), 16);
      const size = field(6);
      const nameSize = field(11);
      if (!Number.isFinite(size) || !Number.isFinite(nameSize)) throw new KilnError('the initramfs holds a damaged cpio header');
      const name = buf.subarray(o + 110, o + 110 + nameSize - 1).toString('utf8');
      o = align4(o + 110 + nameSize);
      o = align4(o + size);
      if (name === 'TRAILER!!!') break;
      names.push(name);
      if (o > buf.length) throw new KilnError('the initramfs ends inside a cpio member');
    }
  }
}

const align4 = (n: number) => (n + 3) & ~3;

/** Every member name of an initramfs (early uncompressed archives, then the compressed main one). */
export async function initramfsMembers(initrd: Buffer, scratch: string, logger: Logger = silentLogger): Promise<string[]> {
  const { names, end } = cpioMembers(initrd);
  const rest = initrd.subarray(end);
  if (rest.length === 0) return names;
  let cpio: Buffer;
  if (rest[0] === 0x1f && rest[1] === 0x8b) {
    cpio = gunzipSync(rest);
  } else {
    const tool = rest.readUInt32LE(0) === 0xfd2fb528 ? 'zstd' : rest.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) ? 'xz' : undefined;
    if (!tool) throw new KilnError(`the initramfs is compressed in a way Kiln does not read (bytes ${rest.subarray(0, 4).toString('hex')})`, { hint: 'set COMPRESS=zstd, xz or gzip in /etc/initramfs-tools/initramfs.conf' });
    // exec captures text, so the host tool decompresses file to file.
    const dir = mkdtempSync(join(scratch, 'initrd-'));
    try {
      const packed = join(dir, tool === 'zstd' ? 'main.zst' : 'main.xz');
      writeFileSync(packed, rest);
      await exec(tool, ['-d', '-k', '-f', '-q', '--', packed], { logger, hint: `needs ${tool} to read the initramfs` });
      cpio = readFileSync(join(dir, 'main'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return [...names, ...cpioMembers(cpio).names];
}

export interface Ec2Fitness { bootMode: BootMode; problems: string[]; kernel?: string }

/** Reads the disk's root filesystem (read-only, in a private mount namespace) and lists what EC2 would trip on. */
export async function checkFitForEc2(raw: string, scratch: string, logger: Logger = silentLogger): Promise<Ec2Fitness> {
  const bootMode = bootModeOf(raw);
  const problems: string[] = [];
  let kernel: string | undefined;
  await withMountedFilesystem(raw, rootOffset(raw), scratch, async (tree) => {
    const fstab = readTreeFile(tree.root, '/etc/fstab') ?? '';
    const root = fstabRoot(fstab);
    if (!root) problems.push('/etc/fstab mounts nothing on / (EC2 needs root mounted by UUID=)');
    else if (!/^UUID=/.test(root)) problems.push(`/etc/fstab mounts / from ${root}, not by UUID= (on Nitro, EBS volumes are NVMe devices with other names)`);
    let target: string | undefined;
    try { target = readlinkSync(hostPath(tree.root, '/vmlinuz')); } catch { /* no /vmlinuz link */ }
    const boot = readdirSync(resolvedPath(tree.root, '/boot'));
    const version = target ? /vmlinuz-(.+)$/.exec(target)?.[1] : boot.filter((f) => f.startsWith('vmlinuz-')).sort().pop()?.slice('vmlinuz-'.length);
    tree.check();
    if (!version) { problems.push('no kernel in /boot'); return; }
    kernel = version;
    const config = readTreeFile(tree.root, `/boot/config-${version}`, { follow: true, max: 1 << 22 }) ?? '';
    if (!config) { problems.push(`no /boot/config-${version}: cannot tell whether the kernel has NVMe and ENA drivers`); return; }
    const need = [
      { what: 'NVMe', option: 'CONFIG_BLK_DEV_NVME', module: /\/nvme\.ko(\.(xz|zst|gz))?$/ },
      { what: 'ENA', option: 'CONFIG_ENA_ETHERNET', module: /\/ena\.ko(\.(xz|zst|gz))?$/ },
    ];
    const modular = need.filter((n) => kernelOption(config, n.option) !== 'y');
    for (const n of modular) if (kernelOption(config, n.option) !== 'm') problems.push(`kernel ${version} has no ${n.what} driver (${n.option} is not set)`);
    const inInitrd = modular.filter((n) => kernelOption(config, n.option) === 'm');
    if (inInitrd.length) {
      const initrd = readTreeFileBytes(resolvedPath(tree.root, `/boot/initrd.img-${version}`));
      if (!initrd) { problems.push(`no /boot/initrd.img-${version}`); return; }
      const members = await initramfsMembers(initrd, scratch, logger);
      for (const n of inInitrd) if (!members.some((m) => n.module.test(m))) problems.push(`the initramfs of ${version} does not carry the ${n.what} driver (${n.option}=m)`);
    }
  }, logger);
  return { bootMode, problems, kernel };
}

/** A regular file's bytes at a host path already resolved inside the tree (the last link refused). */
function readTreeFileBytes(path: string): Buffer | undefined {
  let fd: number;
  try { fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW); } catch { return undefined; }
  try { return fstatSync(fd).isFile() ? readFileSync(fd) : undefined; } finally { closeSync(fd); }
}

export const EC2_FIX_HINT = 'in the playbook: add the drivers to the initramfs (e.g. "ena" and "nvme" in /etc/initramfs-tools/modules, then update-initramfs -u) and mount / by UUID=; Debian\'s linux-image-cloud-amd64 has NVMe built in';
