/**
 * A vendor's disk image (already verified, src/source/image.ts) as a base tree, losslessly and
 * without touching the host:
 *   - a tar archive (Debian's .tar.xz, GCE's disk.raw in .tar.gz) gives up its one disk member,
 *     extracted by name into Kiln's scratch;
 *   - the disk file is classified from its own bytes (src/image/disk-file.ts: anything that names
 *     another file is refused) and converted to raw by qemu-img with no backing chain;
 *   - the GPT is read (src/disk/gpt.ts): a BIOS boot partition, an ESP and one ext4 root, nothing
 *     else (a partition Kiln would drop is an error, not a surprise after boot);
 *   - the root filesystem is read through fuse2fs in a mount namespace of its own
 *     (src/image/mount.ts) and written to a POSIX tar with owners, modes (setuid, setgid, sticky),
 *     hard links, device nodes, symlinks, xattrs (security.capability) and ACLs.
 * The layout (partition numbers, offsets, GUIDs, the root filesystem's UUID and the ESP's serial)
 * is returned, so the disk step can keep the vendor's shape and every UUID its fstab names.
 */
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { rawOf } from '../audit/image.js';
import { GptError, PART_TYPE, SECTOR, type GptEntry } from '../disk/gpt.js';
import { KilnError } from '../errors.js';
import { exec, output } from '../exec.js';
import type { Logger } from '../log.js';
import { checkedDiskFormat } from './disk-file.js';
import { withMountedFilesystem } from './mount.js';
import { describePartitions, gptOf, readFd, rootPartition } from './root-fs.js';
import { resolvedPath } from './tree.js';

export type PartitionRole = 'bios' | 'esp' | 'root';

export interface VendorPartition { index: number; role: PartitionRole; type: string; uuid: string; name: string; startLba: number; sizeLba: number }

/** The vendor disk's shape and identities, which the disk step keeps. */
export interface VendorLayout {
  diskGuid: string;
  partitions: VendorPartition[];
  /** ext4 UUID of the root filesystem (fstab and GRUB find it by this). */
  rootFsUuid: string;
  /** FAT volume serial of the ESP as mkfs.vfat -i takes it (8 hex digits), when there is an ESP. */
  espSerial?: string;
  /** Volume labels (an fstab may name LABEL=cloudimg-rootfs); "" when the filesystem has none. */
  rootLabel: string;
  espLabel?: string;
  /** The vendor disk's virtual size. */
  sizeBytes: number;
  /** What the file was, e.g. "qcow2 version 3, no backing file…" or "disk.raw in a tar archive". */
  detail: string;
}

/** Compressed or plain tar, from the first bytes: xz, gzip, zstd, bzip2, or a ustar header. */
export function isArchive(head: Buffer): boolean {
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return true;
  if (head[0] === 0x1f && head[1] === 0x8b) return true;
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return true;
  if (head.subarray(0, 3).toString('latin1') === 'BZh') return true;
  return head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar';
}

const DISK_MEMBER = /(^|\/)(disk\.raw|[^/]+\.(raw|img|qcow2|vmdk|vhd|vhdx))$/;

/** The archive's one disk member: the name Kiln extracts; refuses none, several, or a name that climbs out. */
export function diskMember(names: string[], shown: string): string {
  const disks = names.filter((n) => DISK_MEMBER.test(n));
  if (disks.length !== 1) {
    throw new KilnError(`${shown}: expected one disk image in the archive (disk.raw or *.raw/.img/.qcow2/.vmdk/.vhd/.vhdx), found ${disks.length}`, {
      detail: names.slice(0, 20).join('\n'), hint: 'point source.image.url at the disk image itself, or at an archive holding exactly one',
    });
  }
  const m = disks[0];
  if (m.startsWith('/') || m.split('/').includes('..')) throw new KilnError(`${shown}: the archive's disk member ${JSON.stringify(m)} is an absolute path or climbs out with ..: refused`);
  return m;
}

function uuidOf(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** The FAT volume serial of a FAT12/16/32 boot sector, as 8 upper-case hex digits. */
export function fatSerial(bootSector: Buffer): string | undefined {
  if (bootSector.length < 512 || bootSector.readUInt16LE(510) !== 0xaa55) return undefined;
  const fat32 = bootSector.readUInt16LE(0x16) === 0;
  const sigAt = fat32 ? 0x42 : 0x26;
  if (bootSector[sigAt] !== 0x29) return undefined;
  return bootSector.readUInt32LE(sigAt + 1).toString(16).padStart(8, '0').toUpperCase();
}

/** The volume label of a FAT12/16/32 boot sector, trailing blanks removed ("NO NAME" is none). */
export function fatLabel(bootSector: Buffer): string | undefined {
  const fat32 = bootSector.readUInt16LE(0x16) === 0;
  const at = fat32 ? 0x47 : 0x2b;
  const label = bootSector.subarray(at, at + 11).toString('latin1').replace(/[ \0]+$/, '');
  return label === 'NO NAME' || label === '' ? undefined : label;
}

/** Labels Kiln passes to mke2fs -L and mkfs.vfat -n: printable ASCII without quotes, as the tools take them. */
function safeLabel(l: string | undefined, max: number): string | undefined {
  return l !== undefined && /^[A-Za-z0-9 ._+-]*$/.test(l) && l.length <= max ? l : undefined;
}

/** Roles of a vendor GPT's partitions; anything but BIOS boot, ESP and the ext4 root is refused. */
export function vendorLayout(raw: string, detail: string): { layout: VendorLayout; rootOffset: number } {
  const fd = openSync(raw, 'r');
  try {
    const size = statSync(raw).size;
    let gpt: ReturnType<typeof gptOf>;
    try {
      gpt = gptOf(fd);
    } catch (e) {
      if (e instanceof GptError) throw new KilnError(`the image's partition table is unreadable: ${e.message}`);
      throw e;
    }
    if (!gpt) {
      throw new KilnError('the image has no GPT partition table', { hint: 'Kiln customises GPT disk images (every current cloud image is one); an MBR or bare filesystem image is not supported' });
    }
    const { entries } = gpt;
    const root = rootPartition(fd, entries);
    const describe = describePartitions(entries);
    if (!root) throw new KilnError('the image has no ext4 root partition', { detail: describe, hint: 'Kiln reads an ext4 root in a Linux root (4F68BCE3-…) or Linux data (0FC63DAF-…) partition' });
    const role = (p: GptEntry): PartitionRole | undefined => (p === root ? 'root' : p.type === PART_TYPE.biosBoot ? 'bios' : p.type === PART_TYPE.esp ? 'esp' : undefined);
    const others = entries.filter((p) => !role(p));
    if (others.length) {
      throw new KilnError(`the image has partitions Kiln would not carry over: ${others.map((p) => `${p.index} ("${p.name}", type ${p.type})`).join(', ')}`, {
        detail: describe, hint: 'Kiln rebuilds a BIOS boot partition, an ESP and one ext4 root; a separate /boot, /var or swap partition is not supported yet',
      });
    }
    for (const r of ['bios', 'esp'] as const) {
      if (entries.filter((p) => role(p) === r).length > 1) throw new KilnError(`the image has more than one ${r === 'bios' ? 'BIOS boot partition' : 'ESP'}`, { detail: describe });
    }
    if (entries.some((p) => p !== root && p.firstLba > root.firstLba)) {
      throw new KilnError('the root partition is not the last on the disk: Kiln grows it to disk.size, which needs it last', { detail: describe });
    }
    const rootOffset = root.firstLba * SECTOR;
    const sb = readFd(fd, rootOffset + 1024, 1024);
    const esp = entries.find((p) => role(p) === 'esp');
    const espBoot = esp ? readFd(fd, esp.firstLba * SECTOR, 512) : undefined;
    const espSerial = espBoot ? fatSerial(espBoot) : undefined;
    if (esp && !espSerial) throw new KilnError(`the ESP (partition ${esp.index}) holds no FAT filesystem`, { detail: describe });
    const layout: VendorLayout = {
      diskGuid: gpt.header.diskGuid,
      partitions: entries.map((p) => ({ index: p.index, role: role(p) as PartitionRole, type: p.type, uuid: p.uuid, name: p.name, startLba: p.firstLba, sizeLba: p.lastLba - p.firstLba + 1 })),
      rootFsUuid: uuidOf(sb.subarray(0x68, 0x78)),
      ...(espSerial ? { espSerial } : {}),
      rootLabel: safeLabel(sb.subarray(0x78, 0x88).toString('latin1').replace(/\0+$/, ''), 16) ?? '',
      ...(espBoot && espSerial ? { espLabel: safeLabel(fatLabel(espBoot), 11) } : {}),
      sizeBytes: size,
      detail,
    };
    return { layout, rootOffset };
  } finally {
    closeSync(fd);
  }
}

/** GNU tar options that keep everything a Linux root can hold: numeric owners, xattrs of every namespace, ACLs. */
export const LOSSLESS_TAR = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--format=posix'];

export interface IngestResult { layout: VendorLayout; /** mtime of the vendor's /var/lib/dpkg/status: the base's date. */ date: number }

/**
 * Unpacks (if archived), converts and reads the image `file` into the tar `out`. `scratch` holds
 * the temporary raw disk and the mount point, and is the caller's to remove.
 */
export async function ingestImage(o: { file: string; shown: string; format?: string; scratch: string; out: string; logger: Logger }): Promise<IngestResult> {
  mkdirSync(o.scratch, { recursive: true });
  let disk = o.file;
  let detailPrefix = '';
  const fd = openSync(o.file, 'r');
  const head = readFd(fd, 0, 512);
  closeSync(fd);
  if (isArchive(head)) {
    if (o.format && o.format !== 'tar') throw new KilnError(`${o.shown} is a tar archive, not ${o.format}`, { hint: 'set source.image.format: tar, or leave it out' });
    const names = (await output('tar', ['-tf', o.file], { hint: `${o.shown} is not a readable tar archive` })).split('\n').filter(Boolean);
    const member = diskMember(names, o.shown);
    const dir = join(o.scratch, 'unpack');
    mkdirSync(dir, { recursive: true });
    // One member by name, into Kiln's scratch; GNU tar keeps holes of a sparse member (GCE's disk.raw).
    await exec('tar', ['-xf', o.file, '-C', dir, '--no-same-owner', '--no-same-permissions', '--', member], { logger: o.logger, hint: `cannot extract ${member} from ${o.shown}` });
    disk = join(dir, member);
    if (!existsSync(disk) || !lstatSync(disk).isFile()) throw new KilnError(`${o.shown}: the archive's ${member} is not a regular file`);
    detailPrefix = `${member} in a tar archive: `;
  } else if (o.format === 'tar') {
    throw new KilnError(`${o.shown} is not a tar archive (source.image.format: tar)`);
  }
  const facts = checkedDiskFormat(disk, o.shown, o.format === 'tar' ? undefined : o.format);
  const raw = await rawOf(disk, facts, o.scratch, o.logger);
  const { layout, rootOffset } = vendorLayout(raw, detailPrefix + facts.detail);
  let date = 0;
  await withMountedFilesystem(raw, rootOffset, o.scratch, async (t) => {
    // Resolved inside the tree: an absolute /var link must not reach the host's /var through /proc/<pid>/root.
    try { date = Math.floor(statSync(resolvedPath(t.root, '/var/lib/dpkg/status')).mtimeMs / 1000); } catch { /* no dpkg database: date 0 */ }
    await exec('tar', [...LOSSLESS_TAR, '-cf', o.out, '-C', t.root, '.'], { logger: o.logger, hint: 'the root filesystem could not be read in full: it may be damaged' });
    t.check();
  }, o.logger);
  return { layout, date };
}
