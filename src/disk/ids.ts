/**
 * Every identifier on the disk is derived from one seed (normally "name@version"), so two builds of
 * the same release carry the same GUIDs, UUIDs and serials and can be bit-identical.
 */
import { createHash } from 'node:crypto';

export interface DiskIds {
  /** GPT disk GUID (sfdisk label-id). */
  diskGuid: string;
  biosPartUuid: string;
  espPartUuid: string;
  rootPartUuid: string;
  /** ext4 filesystem UUID (mke2fs -U), used by fstab, grub.cfg and the GRUB search. */
  rootFsUuid: string;
  /** ext4 directory hash seed (s_hash_seed). */
  rootHashSeed: string;
  /** FAT volume serial as mkfs.vfat -i takes it: 8 hex digits, upper case. */
  espSerial: string;
}

function digest(seed: string, purpose: string): Buffer {
  // The purpose is part of the hashed text so each identifier is independent of the others.
  return createHash('sha256').update(`kiln-disk-id\0${purpose}\0${seed}`).digest();
}

/**
 * A UUID-shaped value from the first 16 bytes of sha256(purpose, seed): version 8 (RFC 9562,
 * "custom": neither random nor time-based, which is the truth) and the RFC variant bits.
 */
export function derivedUuid(seed: string, purpose: string): string {
  const b = digest(seed, purpose).subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x80;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

export function diskIds(seed: string): DiskIds {
  if (seed.length === 0) throw new Error('diskIds: the seed must not be empty');
  return {
    diskGuid: derivedUuid(seed, 'gpt-disk'),
    biosPartUuid: derivedUuid(seed, 'gpt-part-bios'),
    espPartUuid: derivedUuid(seed, 'gpt-part-esp'),
    rootPartUuid: derivedUuid(seed, 'gpt-part-root'),
    rootFsUuid: derivedUuid(seed, 'ext4-root-uuid'),
    rootHashSeed: derivedUuid(seed, 'ext4-root-hash-seed'),
    espSerial: digest(seed, 'fat-esp-serial').subarray(0, 4).toString('hex').toUpperCase(),
  };
}

/** The FAT serial as Linux shows it (blkid, fstab): "ABCD-1234". */
export function fatSerialForFstab(serial: string): string {
  return `${serial.slice(0, 4)}-${serial.slice(4, 8)}`;
}
