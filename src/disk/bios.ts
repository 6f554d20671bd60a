/**
 * What grub-bios-setup does for a hard disk, done on bytes (it refuses plain image files).
 * Offsets are GRUB 2.06's include/grub/i386/pc/boot.h and diskboot.S.
 */
export const MBR_BOOT_CODE_END = 0x1b8; // keep the disk signature, partition table and 55AA from here on
export const KERNEL_SECTOR_OFFSET = 0x5c; // GRUB_BOOT_MACHINE_KERNEL_SECTOR: u64 LBA of core.img
export const DRIVE_CHECK_OFFSET = 0x66; // GRUB_BOOT_MACHINE_DRIVE_CHECK: a jump NOP'd for hard disks
export const BLOCKLIST_START_OFFSET = 0x1f4; // diskboot.img blocklist {u64 start, u16 len, u16 segment}

/**
 * Sector 0 with GRUB's boot.img code: boot.img[0:0x1B8] over the existing MBR (the rest, i.e.
 * disk signature, protective partition entry and boot signature, is kept), the LBA of core.img
 * at 0x5C, and the BIOS drive check disabled so it boots from whatever drive the BIOS passes.
 */
export function patchMbr(mbr: Uint8Array, bootImg: Uint8Array, coreLba: number): Buffer {
  if (mbr.length !== 512) throw new RangeError(`MBR must be 512 bytes, got ${mbr.length}`);
  if (bootImg.length !== 512) throw new RangeError(`boot.img must be 512 bytes, got ${bootImg.length}`);
  if (mbr[0x1fe] !== 0x55 || mbr[0x1ff] !== 0xaa) throw new RangeError('sector 0 has no 55AA boot signature (write the partition table first)');
  const out = Buffer.from(mbr);
  out.set(bootImg.subarray(0, MBR_BOOT_CODE_END), 0);
  out.writeBigUInt64LE(BigInt(coreLba), KERNEL_SECTOR_OFFSET);
  out[DRIVE_CHECK_OFFSET] = 0x90;
  out[DRIVE_CHECK_OFFSET + 1] = 0x90;
  return out;
}

/**
 * core.img as it must sit at `coreLba`: its first sector (diskboot.img) loads the rest from the
 * blocklist, whose start grub-mkimage sets to 2; it must point at the sector after the first one.
 * The length and load segment written by grub-mkimage stay.
 */
export function patchCoreImg(core: Uint8Array, coreLba: number, maxSectors: number): Buffer {
  const sectors = Math.ceil(core.length / 512);
  if (core.length < 512) throw new RangeError(`core.img is too small (${core.length} bytes)`);
  if (sectors > maxSectors) throw new RangeError(`core.img needs ${sectors} sectors but the BIOS boot partition has ${maxSectors}`);
  const out = Buffer.alloc(sectors * 512);
  out.set(core, 0);
  const len = out.readUInt16LE(BLOCKLIST_START_OFFSET + 8);
  if (len !== sectors - 1) throw new RangeError(`core.img blocklist length is ${len}, expected ${sectors - 1}: not a GRUB i386-pc core image?`);
  out.writeBigUInt64LE(BigInt(coreLba + 1), BLOCKLIST_START_OFFSET);
  return out;
}
