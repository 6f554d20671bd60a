/**
 * The partition layout (pure), the sfdisk script that writes it, and a parser for the GPT of a raw
 * image (used by the audit to find the root filesystem without mounting anything).
 *
 *   LBA 0            protective MBR (+ GRUB boot.img when BIOS boot is wanted)
 *   LBA 1..33        primary GPT
 *   p1 LBA 2048      BIOS boot, 1 MiB (GRUB core.img)
 *   p2 2 MiB         EFI system partition, FAT32
 *   p3 after ESP     ext4 root (x86-64 discoverable-partitions root type), to 1 MiB before the end
 *   last 1 MiB       backup GPT
 */
import type { DiskIds } from './ids.js';

export const SECTOR = 512;
export const MIB = 1024 * 1024;
const MIB_LBA = MIB / SECTOR;

export const PART_TYPE = {
  biosBoot: '21686148-6449-6E6F-744E-656564454649',
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  rootX86_64: '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
  linuxData: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;

export interface Partition {
  /** The partition's number in the table (sfdisk's pN); absent: numbered in order, 1, 2, 3. */
  index?: number;
  name: string;
  type: string;
  uuid: string;
  startLba: number;
  sizeLba: number;
}

export interface PartitionPlan {
  sizeBytes: number;
  diskGuid: string;
  /** Absent only on a vendor's UEFI-only disk (planVendorPartitions); Kiln's own layout always has one. */
  bios?: Partition;
  esp: Partition;
  root: Partition;
}

export const ESP_SIZE_MIB = 64;
/** Smallest root partition we accept; a Debian tree needs far more, the size check says how much. */
export const MIN_ROOT_MIB = 16;
/** Everything on the disk that is not the root partition. */
export const OVERHEAD_MIB = 1 + 1 + ESP_SIZE_MIB + 1;

export function planPartitions(sizeBytes: number, ids: DiskIds): PartitionPlan {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes % MIB !== 0) {
    throw new RangeError(`disk size must be a whole number of MiB, got ${sizeBytes} bytes`);
  }
  if (sizeBytes < (OVERHEAD_MIB + MIN_ROOT_MIB) * MIB) {
    throw new RangeError(`disk size must be at least ${OVERHEAD_MIB + MIN_ROOT_MIB} MiB, got ${sizeBytes / MIB} MiB`);
  }
  const total = sizeBytes / SECTOR;
  const bios: Partition = { name: 'bios', type: PART_TYPE.biosBoot, uuid: ids.biosPartUuid, startLba: MIB_LBA, sizeLba: MIB_LBA };
  const esp: Partition = { name: 'esp', type: PART_TYPE.esp, uuid: ids.espPartUuid, startLba: 2 * MIB_LBA, sizeLba: ESP_SIZE_MIB * MIB_LBA };
  const rootStart = esp.startLba + esp.sizeLba;
  const root: Partition = { name: 'root', type: PART_TYPE.rootX86_64, uuid: ids.rootPartUuid, startLba: rootStart, sizeLba: total - MIB_LBA - rootStart };
  return { sizeBytes, diskGuid: ids.diskGuid, bios, esp, root };
}

/** The role-bearing partitions of a vendor's disk (src/image/ingest.ts's VendorLayout), as planVendorPartitions needs them. */
export interface VendorShape {
  diskGuid: string;
  partitions: { index: number; role: 'bios' | 'esp' | 'root'; type: string; uuid: string; name: string; startLba: number; sizeLba: number }[];
}

/**
 * The vendor's partition table shape at a new size: the same partition numbers, types, GUIDs,
 * names and offsets; the root (last on the disk) grows to 1 MiB before the end, as Kiln's own does.
 * A disk without a BIOS boot partition (UEFI only) stays without one.
 */
export function planVendorPartitions(sizeBytes: number, v: VendorShape): PartitionPlan {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes % MIB !== 0) throw new RangeError(`disk size must be a whole number of MiB, got ${sizeBytes} bytes`);
  const get = (role: 'bios' | 'esp' | 'root'): Partition => {
    const p = v.partitions.find((q) => q.role === role);
    if (!p) throw new RangeError(`the vendor disk has no ${role === 'bios' ? 'BIOS boot partition' : role === 'esp' ? 'EFI system partition' : 'root partition'}, which Kiln's disk needs`);
    return { index: p.index, name: p.name, type: p.type, uuid: p.uuid, startLba: p.startLba, sizeLba: p.sizeLba };
  };
  const bios = v.partitions.some((q) => q.role === 'bios') ? get('bios') : undefined;
  const esp = get('esp');
  const root = get('root');
  const total = sizeBytes / SECTOR;
  const sizeLba = total - MIB_LBA - root.startLba;
  if (sizeLba < MIN_ROOT_MIB * MIB_LBA) {
    throw new RangeError(`disk size must be at least ${Math.ceil((root.startLba * SECTOR) / MIB) + MIN_ROOT_MIB + 1} MiB: the vendor's root partition starts at ${(root.startLba * SECTOR) / MIB} MiB`);
  }
  return { sizeBytes, diskGuid: v.diskGuid, bios, esp, root: { ...root, sizeLba } };
}

/** Input for `sfdisk <file>`: every value that sfdisk would otherwise pick (GUIDs, LBAs) is pinned. */
export function sfdiskScript(plan: PartitionPlan): string {
  const total = plan.sizeBytes / SECTOR;
  const lines = [
    'label: gpt',
    `label-id: ${plan.diskGuid.toUpperCase()}`,
    'unit: sectors',
    'sector-size: 512',
    'first-lba: 34',
    `last-lba: ${total - 34}`,
    '',
  ];
  for (const p of [plan.bios, plan.esp, plan.root].filter((q): q is Partition => q !== undefined).sort((a, b) => a.startLba - b.startLba)) {
    // sfdisk takes a partition's number from the trailing digits of the name before the colon.
    lines.push(`${p.index !== undefined ? `p${p.index} : ` : ''}start=${p.startLba}, size=${p.sizeLba}, type=${p.type}, uuid=${p.uuid.toUpperCase()}, name="${p.name}"`);
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Reading a GPT (UEFI spec 2.10, section 5.3).

export interface GptEntry {
  index: number;
  type: string;
  uuid: string;
  firstLba: number;
  lastLba: number;
  attributes: bigint;
  name: string;
}

export interface GptHeader {
  diskGuid: string;
  currentLba: number;
  backupLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
}

export class GptError extends Error {
  constructor(message: string) { super(message); this.name = 'GptError'; }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3), as the GPT header and entry array use. */
export function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** GUIDs are stored mixed-endian: the first three fields little-endian, the rest as bytes. */
export function guidFromBytes(b: Uint8Array): string {
  const h = (i: number, n: number, le: boolean) => {
    const s = Array.from(b.subarray(i, i + n), (x) => x.toString(16).padStart(2, '0'));
    return (le ? s.reverse() : s).join('');
  };
  return `${h(0, 4, true)}-${h(4, 2, true)}-${h(6, 2, true)}-${h(8, 2, false)}-${h(10, 6, false)}`.toUpperCase();
}

export function guidToBytes(guid: string): Buffer {
  const hex = guid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new GptError(`not a GUID: ${guid}`);
  const raw = Buffer.from(hex, 'hex');
  const out = Buffer.from(raw);
  out.writeUInt32LE(raw.readUInt32BE(0), 0);
  out.writeUInt16LE(raw.readUInt16BE(4), 4);
  out.writeUInt16LE(raw.readUInt16BE(6), 6);
  return out;
}

function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GptError(`LBA out of range at byte ${off}`);
  return Number(v);
}

/** Parses the primary GPT header from the sector at LBA 1. */
export function parseGptHeader(sector: Buffer): GptHeader {
  if (sector.length < 92) throw new GptError('GPT header sector is truncated');
  if (sector.toString('latin1', 0, 8) !== 'EFI PART') throw new GptError('no GPT signature ("EFI PART") at LBA 1');
  const headerSize = sector.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sector.length) throw new GptError(`bad GPT header size ${headerSize}`);
  const hdr = Buffer.from(sector.subarray(0, headerSize));
  const want = hdr.readUInt32LE(16);
  hdr.writeUInt32LE(0, 16);
  if (crc32(hdr) !== want) throw new GptError('GPT header checksum mismatch');
  return {
    currentLba: u64(sector, 24),
    backupLba: u64(sector, 32),
    firstUsableLba: u64(sector, 40),
    lastUsableLba: u64(sector, 48),
    diskGuid: guidFromBytes(sector.subarray(56, 72)),
    entriesLba: u64(sector, 72),
    entryCount: sector.readUInt32LE(80),
    entrySize: sector.readUInt32LE(84),
  };
}

/** Bytes from the start of the image needed to hold the header and the whole entry array. */
export function gptBytesNeeded(h: GptHeader): number {
  return h.entriesLba * SECTOR + h.entryCount * h.entrySize;
}

/**
 * Parses the primary GPT from the first bytes of an image (at least gptBytesNeeded()).
 * Checks both CRCs; returns the used entries in table order.
 */
export function parseGpt(image: Buffer): { header: GptHeader; entries: GptEntry[] } {
  const header = parseGptHeader(image.subarray(SECTOR, 2 * SECTOR));
  if (header.entrySize < 128 || header.entrySize % 8 !== 0) throw new GptError(`bad GPT entry size ${header.entrySize}`);
  const start = header.entriesLba * SECTOR;
  const end = gptBytesNeeded(header);
  if (image.length < end) throw new GptError(`GPT entry array is truncated (need ${end} bytes, have ${image.length})`);
  const array = image.subarray(start, end);
  if (crc32(array) !== image.readUInt32LE(SECTOR + 88)) throw new GptError('GPT partition entry array checksum mismatch');
  const entries: GptEntry[] = [];
  for (let i = 0; i < header.entryCount; i++) {
    const e = array.subarray(i * header.entrySize, (i + 1) * header.entrySize);
    if (e.subarray(0, 16).every((x) => x === 0)) continue;
    const nameRaw = e.subarray(56, 128).toString('utf16le');
    const nul = nameRaw.indexOf('\0');
    entries.push({
      index: i + 1,
      type: guidFromBytes(e.subarray(0, 16)),
      uuid: guidFromBytes(e.subarray(16, 32)),
      firstLba: u64(e, 32),
      lastLba: u64(e, 40),
      attributes: e.readBigUInt64LE(48),
      name: nul >= 0 ? nameRaw.slice(0, nul) : nameRaw,
    });
  }
  return { header, entries };
}
