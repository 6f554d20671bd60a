/**
 * The VHD hard disk footer (Microsoft "Virtual Hard Disk Image Format Specification" v1.0):
 * the last 512 bytes of a fixed VHD, all fields big-endian.
 *
 * Kiln writes it itself, with the same field values `qemu-img convert -O vpc -o
 * subformat=fixed,force_size=on` writes (the recipe Azure documents), except that the time stamp
 * and unique ID come from SOURCE_DATE_EPOCH and the release instead of the clock and randomness.
 */
export const VHD_FOOTER_SIZE = 512;
export const MIB = 1024 * 1024;
/** Seconds between the Unix epoch and the VHD epoch, 2000-01-01T00:00:00Z. */
export const VHD_EPOCH_OFFSET = 946684800;
export const VHD_COOKIE = 'conectix';
/** Bit 1 is reserved and "must always be set to 1" (spec, Features). */
export const VHD_FEATURES = 0x00000002;
export const VHD_FILE_FORMAT_VERSION = 0x00010000;
/** Fixed disks have no dynamic header: the data offset is all ones. */
export const VHD_FIXED_DATA_OFFSET = 0xffffffffffffffffn;
export const VHD_DISK_TYPE = { fixed: 2, dynamic: 3, differencing: 4 } as const;
/**
 * "qem2" tells QEMU to use current_size rather than the CHS geometry; the geometry below is the
 * maximum, which QEMU and Hyper-V also read as "use current_size". Both as qemu-img force_size writes.
 */
export const VHD_CREATOR_APP = 'qem2';
export const VHD_CREATOR_VERSION = 0x00050003;
export const VHD_CREATOR_HOST_OS = 'Wi2k';
export const VHD_MAX_GEOMETRY = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 } as const;

export interface VhdFooter {
  cookie: string;
  features: number;
  fileFormatVersion: number;
  dataOffset: bigint;
  /** Seconds since 2000-01-01T00:00:00Z. */
  timestamp: number;
  creatorApp: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: bigint;
  currentSize: bigint;
  geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
  diskType: number;
  checksum: number;
  uniqueId: Buffer;
  savedState: number;
  /** True when the stored checksum matches the footer's bytes. */
  checksumValid: boolean;
  /** True when the 427 reserved bytes are all zero, as the spec requires. */
  reservedZero: boolean;
}

/** Azure requires a virtual size that is a whole number of MiB: round up. */
export function roundUpToMiB(bytes: number): number {
  return Math.ceil(bytes / MIB) * MIB;
}

/** The VHD time stamp for a SOURCE_DATE_EPOCH (clamped at the VHD epoch, which cannot go lower). */
export function vhdTimestamp(sourceDateEpoch: number): number {
  return Math.max(0, Math.floor(sourceDateEpoch) - VHD_EPOCH_OFFSET) >>> 0;
}

/** One's complement of the byte sum of the footer, with the checksum field (offset 64) counted as zero. */
export function vhdChecksum(footer: Buffer): number {
  let sum = 0;
  for (let i = 0; i < VHD_FOOTER_SIZE; i++) if (i < 64 || i >= 68) sum += footer[i];
  return ~sum >>> 0;
}

export interface FixedVhdFooterInput {
  /** Virtual size in bytes; must be a whole number of MiB. */
  size: number;
  sourceDateEpoch: number;
  /** 16 bytes, RFC byte order. */
  uniqueId: Buffer;
}

export function buildFixedVhdFooter(input: FixedVhdFooterInput): Buffer {
  if (!Number.isSafeInteger(input.size) || input.size <= 0 || input.size % MIB !== 0) {
    throw new Error(`VHD size ${input.size} is not a positive whole number of MiB`);
  }
  if (input.uniqueId.length !== 16) throw new Error('VHD unique id must be 16 bytes');
  const b = Buffer.alloc(VHD_FOOTER_SIZE);
  b.write(VHD_COOKIE, 0, 'latin1');
  b.writeUInt32BE(VHD_FEATURES, 8);
  b.writeUInt32BE(VHD_FILE_FORMAT_VERSION, 12);
  b.writeBigUInt64BE(VHD_FIXED_DATA_OFFSET, 16);
  b.writeUInt32BE(vhdTimestamp(input.sourceDateEpoch), 24);
  b.write(VHD_CREATOR_APP, 28, 'latin1');
  b.writeUInt32BE(VHD_CREATOR_VERSION, 32);
  b.write(VHD_CREATOR_HOST_OS, 36, 'latin1');
  b.writeBigUInt64BE(BigInt(input.size), 40);
  b.writeBigUInt64BE(BigInt(input.size), 48);
  b.writeUInt16BE(VHD_MAX_GEOMETRY.cylinders, 56);
  b.writeUInt8(VHD_MAX_GEOMETRY.heads, 58);
  b.writeUInt8(VHD_MAX_GEOMETRY.sectorsPerTrack, 59);
  b.writeUInt32BE(VHD_DISK_TYPE.fixed, 60);
  input.uniqueId.copy(b, 68);
  b.writeUInt8(0, 84);
  b.writeUInt32BE(vhdChecksum(b), 64);
  return b;
}

/** Parses a footer (the last 512 bytes of a VHD). Throws when the buffer is not 512 bytes. */
export function parseVhdFooter(buf: Buffer): VhdFooter {
  if (buf.length !== VHD_FOOTER_SIZE) throw new Error(`a VHD footer is ${VHD_FOOTER_SIZE} bytes, got ${buf.length}`);
  const checksum = buf.readUInt32BE(64);
  return {
    cookie: buf.toString('latin1', 0, 8),
    features: buf.readUInt32BE(8),
    fileFormatVersion: buf.readUInt32BE(12),
    dataOffset: buf.readBigUInt64BE(16),
    timestamp: buf.readUInt32BE(24),
    creatorApp: buf.toString('latin1', 28, 32),
    creatorVersion: buf.readUInt32BE(32),
    creatorHostOs: buf.toString('latin1', 36, 40),
    originalSize: buf.readBigUInt64BE(40),
    currentSize: buf.readBigUInt64BE(48),
    geometry: { cylinders: buf.readUInt16BE(56), heads: buf.readUInt8(58), sectorsPerTrack: buf.readUInt8(59) },
    diskType: buf.readUInt32BE(60),
    checksum,
    uniqueId: Buffer.from(buf.subarray(68, 84)),
    savedState: buf.readUInt8(84),
    checksumValid: checksum === vhdChecksum(buf),
    reservedZero: buf.subarray(85).every((x) => x === 0),
  };
}
