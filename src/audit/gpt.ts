/**
 * A small GPT reader: enough to find the root filesystem in a raw disk without loop devices.
 * Pure (bytes in, partitions out). The disk assembly writes the same layout (src/disk/); this
 * copy keeps the audit independent of the writer, so a writer bug cannot hide from it.
 */
export const ROOT_X86_64 = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';
export const LINUX_DATA = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

export interface GptPartition {
  /** 1-based, as partition numbers are shown by sfdisk. */
  number: number;
  type: string;
  guid: string;
  firstLba: number;
  lastLba: number;
  name: string;
}

export interface GptHeader {
  sectorSize: number;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
}

/** GUIDs are stored with the first three fields little-endian. */
export function guidAt(b: Buffer, o: number): string {
  const hex = (from: number, to: number) => b.subarray(o + from, o + to).toString('hex');
  const le = (from: number, to: number) => Buffer.from(b.subarray(o + from, o + to)).reverse().toString('hex');
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${hex(8, 10)}-${hex(10, 16)}`.toUpperCase();
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

export function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Parses the primary header in LBA 1 (`lba1` holds that sector); undefined when it is not a valid GPT header. */
export function parseGptHeader(lba1: Buffer, sectorSize: number): GptHeader | undefined {
  if (lba1.length < 92 || lba1.toString('latin1', 0, 8) !== 'EFI PART') return undefined;
  const size = lba1.readUInt32LE(12);
  if (size < 92 || size > lba1.length) return undefined;
  const copy = Buffer.from(lba1.subarray(0, size));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== lba1.readUInt32LE(16)) return undefined;
  return {
    sectorSize,
    entriesLba: Number(lba1.readBigUInt64LE(72)),
    entryCount: lba1.readUInt32LE(80),
    entrySize: lba1.readUInt32LE(84),
  };
}

/** The used entries of a partition array. */
export function parseGptEntries(entries: Buffer, h: GptHeader): GptPartition[] {
  const out: GptPartition[] = [];
  for (let i = 0; i < h.entryCount && (i + 1) * h.entrySize <= entries.length; i++) {
    const o = i * h.entrySize;
    const type = guidAt(entries, o);
    if (type === '00000000-0000-0000-0000-000000000000') continue;
    const name = entries.subarray(o + 56, o + Math.min(128, h.entrySize)).toString('utf16le').replace(/\0.*$/s, '');
    out.push({
      number: i + 1, type, guid: guidAt(entries, o + 16),
      firstLba: Number(entries.readBigUInt64LE(o + 32)), lastLba: Number(entries.readBigUInt64LE(o + 40)), name,
    });
  }
  return out;
}

/** The root filesystem partition: x86-64 root type first, then generic Linux data, in table order. */
export function rootCandidates(parts: GptPartition[]): GptPartition[] {
  return [...parts.filter((p) => p.type === ROOT_X86_64), ...parts.filter((p) => p.type === LINUX_DATA)];
}

/** True when the 2 KiB at a filesystem's start carry the ext2/3/4 superblock magic. */
export function isExtSuperblock(head: Buffer): boolean {
  return head.length >= 1082 && head.readUInt16LE(1024 + 56) === 0xef53;
}
