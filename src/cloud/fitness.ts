/**
 * Is a release's disk fit for the cloud it is published to? Checked on the finished disk before
 * anything is uploaded, so an image that cannot boot there is refused with the fix, not found out at
 * launch:
 * - the boot mode the disk supports, from its partition table (a BIOS boot partition and an ESP: both);
 * - root mounted by UUID in /etc/fstab (device names differ between VM types, e.g. NVMe on EC2 Nitro);
 * - the platform's storage and network drivers (PLATFORM_DRIVERS) built into the kernel that /vmlinuz
 *   names, or carried in its initramfs (read here: the newc cpio archives, the compressed one
 *   decompressed by node's zlib or the host's zstd or xz);
 * - on Azure, something that reports the VM ready: the Azure agent, or cloud-init with Azure allowed.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';
import { PART_TYPE } from '../disk/gpt.js';
import { gptOf, rootOffset } from '../image/root-fs.js';
import { withMountedFilesystem } from '../image/mount.js';
import { existsInTree, hostPath, readTreeBytes, readTreeFile, resolvedPath } from '../image/tree.js';

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

/** The clouds a disk is checked for before it is published. */
export type Platform = 'ec2' | 'azure' | 'gce';

interface Driver { what: string; option: string; module: string }

/** The drivers each platform's VMs need, built in (=y) or carried in the initramfs (=m). */
export const PLATFORM_DRIVERS: Record<Platform, readonly Driver[]> = {
  // Nitro presents EBS volumes as NVMe and its network as ENA.
  ec2: [{ what: 'NVMe', option: 'CONFIG_BLK_DEV_NVME', module: 'nvme' }, { what: 'ENA', option: 'CONFIG_ENA_ETHERNET', module: 'ena' }],
  // Hyper-V: the VMBus, and the synthetic storage and network devices on it.
  azure: [
    { what: 'Hyper-V VMBus', option: 'CONFIG_HYPERV', module: 'hv_vmbus' },
    { what: 'Hyper-V storage (storvsc)', option: 'CONFIG_HYPERV_STORAGE', module: 'hv_storvsc' },
    { what: 'Hyper-V network (netvsc)', option: 'CONFIG_HYPERV_NET', module: 'hv_netvsc' },
  ],
  // GCE's virtio-scsi disks and its gVNIC network.
  gce: [{ what: 'virtio-scsi', option: 'CONFIG_SCSI_VIRTIO', module: 'virtio_scsi' }, { what: 'gVNIC', option: 'CONFIG_GVE', module: 'gve' }],
};

export const FIX_HINT: Record<Platform, string> = {
  ec2: 'in the playbook: add the drivers to the initramfs (e.g. "ena" and "nvme" in /etc/initramfs-tools/modules, then update-initramfs -u) and mount / by UUID=; Debian\'s linux-image-cloud-amd64 has NVMe built in',
  azure: 'in the playbook: add hv_vmbus, hv_storvsc and hv_netvsc to /etc/initramfs-tools/modules and run update-initramfs -u; install cloud-init (with Azure in its datasource_list, the default) or walinuxagent; mount / by UUID=',
  gce: 'in the playbook: add virtio_scsi and gve to /etc/initramfs-tools/modules and run update-initramfs -u; mount / by UUID=',
};

export interface Fitness { bootMode: BootMode; problems: string[]; kernel?: string }

/** cloud-init's datasource_list from its configuration files (the last one that sets it wins), or undefined: the default list. */
export function datasourceList(configs: string[]): string[] | undefined {
  let list: string[] | undefined;
  for (const text of configs) {
    const m = /^datasource_list:\s*\[([^\]]*)\]/m.exec(text);
    if (m) list = m[1].split(',').map((x) => x.trim().replace(/^['"]|['"]$/g, '')).filter(Boolean);
  }
  return list;
}

/** Reads the disk's root filesystem (read-only, in a private mount namespace) and lists what the platform would trip on. */
export async function checkFit(raw: string, platform: Platform, scratch: string, logger: Logger = silentLogger): Promise<Fitness> {
  const bootMode = bootModeOf(raw);
  const problems: string[] = [];
  let kernel: string | undefined;
  await withMountedFilesystem(raw, rootOffset(raw), scratch, async (tree) => {
    const fstab = readTreeFile(tree.root, '/etc/fstab') ?? '';
    const root = fstabRoot(fstab);
    if (!root) problems.push('/etc/fstab mounts nothing on / (root must be mounted by UUID=)');
    else if (!/^UUID=/.test(root)) problems.push(`/etc/fstab mounts / from ${root}, not by UUID= (device names differ from one cloud VM type to another, e.g. NVMe on EC2 Nitro)`);
    if (platform === 'azure') {
      const agent = existsInTree(tree.root, '/usr/sbin/waagent');
      const cloudInit = existsInTree(tree.root, '/usr/bin/cloud-init');
      if (!agent && !cloudInit) problems.push('neither cloud-init nor the Azure agent (walinuxagent) is installed: the VM would never report ready');
      else if (!agent) {
        const dir = resolvedPath(tree.root, '/etc/cloud/cloud.cfg.d');
        let names: string[] = [];
        try { names = readdirSync(dir).filter((n) => n.endsWith('.cfg')).sort(); } catch { /* none */ }
        const list = datasourceList([readTreeFile(tree.root, '/etc/cloud/cloud.cfg', { follow: true }) ?? '', ...names.map((n) => readTreeFile(tree.root, `/etc/cloud/cloud.cfg.d/${n}`, { follow: true }) ?? '')]);
        if (list && !list.includes('Azure')) problems.push(`cloud-init's datasource_list is [${list.join(', ')}], without Azure`);
      }
    }
    let target: string | undefined;
    try { target = readlinkSync(hostPath(tree.root, '/vmlinuz')); } catch { /* no /vmlinuz link */ }
    const boot = readdirSync(resolvedPath(tree.root, '/boot'));
    const version = target ? /vmlinuz-(.+)$/.exec(target)?.[1] : boot.filter((f) => f.startsWith('vmlinuz-')).sort().pop()?.slice('vmlinuz-'.length);
    tree.check();
    if (!version) { problems.push('no kernel in /boot'); return; }
    kernel = version;
    const need = PLATFORM_DRIVERS[platform];
    const config = readTreeFile(tree.root, `/boot/config-${version}`, { follow: true, max: 1 << 22 }) ?? '';
    if (!config) { problems.push(`no /boot/config-${version}: cannot tell whether the kernel has the ${need.map((n) => n.what).join(', ')} drivers`); return; }
    const modular = need.filter((n) => kernelOption(config, n.option) !== 'y');
    for (const n of modular) if (kernelOption(config, n.option) !== 'm') problems.push(`kernel ${version} has no ${n.what} driver (${n.option} is not set)`);
    const inInitrd = modular.filter((n) => kernelOption(config, n.option) === 'm');
    if (inInitrd.length) {
      const initrd = readTreeBytes(tree.root, `/boot/initrd.img-${version}`, { follow: true, max: 1 << 30 });
      if (!initrd) { problems.push(`no /boot/initrd.img-${version}`); return; }
      const members = await initramfsMembers(initrd, scratch, logger);
      for (const n of inInitrd) {
        const re = new RegExp(`/${n.module}\\.ko(\\.(xz|zst|gz))?$`);
        if (!members.some((m) => re.test(m))) problems.push(`the initramfs of ${version} does not carry the ${n.what} driver (${n.module}, ${n.option}=m)`);
      }
    }
  }, logger);
  return { bootMode, problems, kernel };
}
