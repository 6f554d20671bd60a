/**
 * Assembling the raw disk: root tree -> GPT disk that boots under BIOS (GRUB i386-pc in the BIOS
 * boot partition) and UEFI (GRUB at the fallback path on the ESP), built only from files: no
 * mounts, no loop devices. Same seed, tree and SOURCE_DATE_EPOCH give the same bytes.
 */
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { humanBytes, silentLogger, type Logger } from '../log.js';
import { patchCoreImg, patchMbr } from './bios.js';
import { fstab, grubConfig } from './bootconfig.js';
import { buildEsp } from './esp.js';
import { buildExt4 } from './ext4.js';
import { MIB, OVERHEAD_MIB, SECTOR, planPartitions, planVendorPartitions, sfdiskScript, type Partition, type PartitionPlan, type VendorShape } from './gpt.js';
import { GRUB_LIB, buildGrubImage, grubModuleDir } from './grub.js';
import { diskIds, fatSerialForFstab } from './ids.js';
import { copyIntoSparse, readAt, writeAt } from './sparse.js';
import { existsInTree, readTreeFile, writeTreeFile } from '../image/tree.js';
import { clampAndMeasure, requiredRootBytes } from './tree.js';

export { diskIds } from './ids.js';
export type { DiskIds } from './ids.js';

export type Firmware = 'bios' | 'uefi';

export interface DiskSpec {
  /** Directory holding the root file tree. grub.cfg and fstab are written into it, mtimes clamped. */
  root: string;
  /** The raw disk to write; it appears only when complete. */
  out: string;
  /** Whole MiB. */
  sizeBytes: number;
  firmware: Firmware[];
  /** Every GUID, UUID and serial derives from this, normally "name@version". */
  seed: string;
  sourceDateEpoch: number;
  /** Appended to the kernel command line. */
  kernelCmdline?: string;
  /**
   * A vendor disk's shape to keep (source.image): its partition numbers, offsets and GUIDs, its
   * root filesystem UUID and ESP serial (the ones its fstab names). Absent: Kiln's own layout,
   * every identifier derived from the seed.
   */
  vendor?: VendorShape & { rootFsUuid: string; espSerial?: string; rootLabel?: string; espLabel?: string };
  /** Scratch directory for the partition images (about the size of the disk, sparse). */
  workDir: string;
  logger?: Logger;
}

export interface DiskLayout {
  diskGuid: string;
  rootFsUuid: string;
  /** FAT volume id as fstab and blkid show it, e.g. "1A2B-3C4D". */
  espSerial: string;
  partitions: { index?: number; name: string; type: string; uuid: string; startLba: number; sizeLba: number }[];
  sizeBytes: number;
}

const STEP = 'assemble disk';

/**
 * Runs one part of the assembly, naming the part in its errors. The host refusing a file operation
 * (no space, no permission: an error with a syscall) is the user's to fix; any other error is a bug
 * and goes on as it is, stack and all (src/errors.ts).
 */
async function part<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof KilnError) {
      e.where.step ??= `${STEP}: ${name}`;
      throw e;
    }
    if (e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string') {
      throw new KilnError(`${name} failed: ${e.message}`, { where: { step: `${STEP}: ${name}` }, cause: e });
    }
    throw e;
  }
}

function tooSmall(needBytes: number, haveBytes: number): KilnError {
  // Leave ~10% free space in the booted system, rounded up to 64 MiB.
  const diskMiB = Math.ceil((Math.ceil(needBytes * 1.1 / MIB) + OVERHEAD_MIB) / 64) * 64;
  return new KilnError(
    `the root tree does not fit: it needs about ${Math.ceil(needBytes / MIB)} MiB of ext4 but the root partition is ${Math.floor(haveBytes / MIB)} MiB`,
    { where: { step: `${STEP}: ext4 root` }, hint: `set disk.size in kiln.yaml to at least ${diskMiB}MiB` },
  );
}

async function createSparse(path: string, size: number): Promise<void> {
  await rm(path, { force: true });
  const fh = await open(path, 'w');
  try { await fh.truncate(size); } finally { await fh.close(); }
}

export async function assembleDisk(spec: DiskSpec): Promise<DiskLayout> {
  const log = spec.logger ?? silentLogger;
  const sde = spec.sourceDateEpoch;
  if (!Number.isSafeInteger(sde) || sde < 0) throw new KilnError(`SOURCE_DATE_EPOCH must be a non-negative integer, got ${sde}`, { where: { step: STEP } });
  if (spec.firmware.length === 0) throw new KilnError('no firmware to boot under: firmware must list bios, uefi or both', { where: { step: STEP } });
  if (/[\n\r]/.test(spec.kernelCmdline ?? '')) throw new KilnError('the kernel command line must be one line', { where: { step: STEP }, hint: 'remove the line breaks from disk.kernel_cmdline' });
  const bios = spec.firmware.includes('bios');
  const uefi = spec.firmware.includes('uefi');
  const v = spec.vendor;
  const ids = { ...diskIds(spec.seed), ...(v ? { rootFsUuid: v.rootFsUuid, ...(v.espSerial ? { espSerial: v.espSerial } : {}) } : {}) };
  let plan: PartitionPlan;
  try {
    plan = v ? planVendorPartitions(spec.sizeBytes, v) : planPartitions(spec.sizeBytes, ids);
  } catch (e) {
    throw new KilnError(`bad disk size: ${(e as Error).message}`, { where: { step: STEP }, hint: v ? "set disk.size to a whole number of MiB past the start of the vendor's root partition" : 'set disk.size to a whole number of MiB, e.g. 2GiB' });
  }
  const biosPart = plan.bios;
  if (bios && !biosPart) {
    throw new KilnError('the vendor disk has no BIOS boot partition, so it cannot boot under BIOS', { where: { step: STEP }, hint: 'set disk.firmware: [uefi] in kiln.yaml (the image is UEFI only, as its vendor made it)' });
  }
  const rootStat = await stat(spec.root).catch(() => undefined);
  if (!rootStat?.isDirectory()) throw new KilnError(`root tree not found: ${spec.root}`, { where: { step: STEP } });
  if (bios) await grubModuleDir('i386-pc');
  if (uefi) await grubModuleDir('x86_64-efi');
  await mkdir(spec.workDir, { recursive: true });

  const rootImg = join(spec.workDir, 'root.ext4');
  const espImg = join(spec.workDir, 'esp.vfat');
  const coreImg = join(spec.workDir, 'core.img');
  const efiImg = join(spec.workDir, 'BOOTX64.EFI');
  const partial = `${spec.out}.partial`;
  let done = false;
  try {
    await part('boot files', async () => {
      // Through the tree helper: a playbook's /boot -> /host-boot link must not reach the build host.
      writeTreeFile(spec.root, '/boot/grub/grub.cfg', grubConfig(ids.rootFsUuid, spec.kernelCmdline));
      writeTreeFile(spec.root, '/etc/fstab', fstab(ids.rootFsUuid, readTreeFile(spec.root, '/etc/fstab') ?? '', v?.rootLabel));
      for (const k of ['vmlinuz', 'initrd.img']) {
        if (!existsInTree(spec.root, `/${k}`)) log.warn(`the root tree has no /${k}: the disk will not boot a kernel`);
      }
    });

    const rootBytes = plan.root.sizeLba * SECTOR;
    const fix = await part('ext4 root', async () => {
      const stats = await clampAndMeasure(spec.root, sde);
      const need = requiredRootBytes(stats);
      log.debug(`root tree: ${stats.inodes} inodes, ${humanBytes(stats.dataBlocks * 4096)} in blocks, ${stats.clamped} mtimes clamped; needs ~${humanBytes(need)} of ${humanBytes(rootBytes)}`);
      if (need > rootBytes) throw tooSmall(need, rootBytes);
      await createSparse(rootImg, rootBytes);
      try {
        return await buildExt4({ tree: spec.root, image: rootImg, uuid: ids.rootFsUuid, hashSeed: ids.rootHashSeed, sourceDateEpoch: sde, ...(v?.rootLabel !== undefined ? { label: v.rootLabel } : {}) }, spec.workDir, log);
      } catch (e) {
        // The estimate is conservative, but if mke2fs still runs out of room say so plainly.
        const text = e instanceof KilnError ? `${e.message}\n${e.detail ?? ''}` : String(e);
        if (/could not allocate|no space|no free space|inode/i.test(text)) throw tooSmall(Math.max(need, rootBytes + 64 * MIB), rootBytes);
        throw e;
      }
    });
    log.debug(fix.native ? 'mke2fs honours SOURCE_DATE_EPOCH and hash_seed' : `e2fsprogs < 1.47.1: fixed times of ${fix.fixedInodes} inodes and the hash seed with debugfs`);

    if (bios) await part('GRUB for BIOS', () => buildGrubImage('i386-pc', coreImg, ids.rootFsUuid, spec.workDir, log));
    if (uefi) await part('GRUB for UEFI', () => buildGrubImage('x86_64-efi', efiImg, ids.rootFsUuid, spec.workDir, log));
    await part('EFI system partition', async () => {
      await rm(espImg, { force: true });
      await buildEsp(espImg, plan.esp.sizeLba * SECTOR, ids.espSerial, uefi ? [{ source: efiImg, target: 'EFI/BOOT/BOOTX64.EFI' }] : [], sde, log, v?.espLabel);
    });

    await part('partition table', async () => {
      await createSparse(partial, plan.sizeBytes);
      await exec('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', partial], { input: sfdiskScript(plan), logger: log, env: { LC_ALL: 'C' } });
    });
    await part('write partitions', async () => {
      await copyIntoSparse(espImg, partial, plan.esp.startLba * SECTOR);
      await copyIntoSparse(rootImg, partial, plan.root.startLba * SECTOR);
    });
    if (bios && biosPart) {
      await part('BIOS boot code', async () => {
        const core = patchCoreImg(await readFile(coreImg), biosPart.startLba, biosPart.sizeLba);
        await writeAt(partial, [{ offset: biosPart.startLba * SECTOR, data: core }]);
        const bootImg = await readFile(join(GRUB_LIB, 'i386-pc', 'boot.img'));
        await writeAt(partial, [{ offset: 0, data: patchMbr(await readAt(partial, 0, SECTOR), bootImg, biosPart.startLba) }]);
      });
    }
    await rename(partial, spec.out);
    done = true;
  } finally {
    await Promise.all([rootImg, espImg, coreImg, efiImg].map((f) => rm(f, { force: true })));
    if (!done) await rm(partial, { force: true });
  }

  const parts: Partition[] = [plan.bios, plan.esp, plan.root].filter((q): q is Partition => q !== undefined);
  return {
    diskGuid: plan.diskGuid,
    rootFsUuid: ids.rootFsUuid,
    espSerial: fatSerialForFstab(ids.espSerial),
    partitions: parts.map((p) => ({ ...(p.index !== undefined ? { index: p.index } : {}), name: p.name, type: p.type, uuid: p.uuid, startLba: p.startLba, sizeLba: p.sizeLba })),
    sizeBytes: plan.sizeBytes,
  };
}
