/**
 * The hosted sparse extent header and the embedded text descriptor of a VMDK (VMware "Virtual
 * Disk Format 5.0"). qemu-img puts a random CID in the descriptor; Kiln replaces it in place
 * (same length, no checksum covers the descriptor) with one derived from the release.
 */
import { KilnError } from '../errors.js';
export const VMDK_MAGIC = 0x564d444b; // "KDMV" read little-endian
export const SECTOR = 512;

export interface VmdkHeader {
  version: number;
  flags: number;
  capacitySectors: bigint;
  grainSectors: bigint;
  descriptorOffsetSectors: number;
  descriptorSizeSectors: number;
  compressAlgorithm: number;
}

export function parseVmdkHeader(buf: Buffer): VmdkHeader {
  if (buf.length < SECTOR || buf.readUInt32LE(0) !== VMDK_MAGIC) throw new KilnError('expected a sparse VMDK from qemu-img (starting with the KDMV magic), got something else', { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  return {
    version: buf.readUInt32LE(4),
    flags: buf.readUInt32LE(8),
    capacitySectors: buf.readBigUInt64LE(12),
    grainSectors: buf.readBigUInt64LE(20),
    descriptorOffsetSectors: Number(buf.readBigUInt64LE(28)),
    descriptorSizeSectors: Number(buf.readBigUInt64LE(36)),
    compressAlgorithm: buf.readUInt16LE(77),
  };
}

export interface VmdkDescriptor {
  cid?: string;
  parentCid?: string;
  createType?: string;
  /** Extent lines, e.g. { access: 'RW', sectors: 98304, type: 'SPARSE', file: 'x.vmdk' }. */
  extents: { access: string; sectors: number; type: string; file: string }[];
  /** ddb.* keys without the prefix, e.g. adapterType, toolsVersion. */
  ddb: Record<string, string>;
}

export function parseVmdkDescriptor(text: string): VmdkDescriptor {
  const d: VmdkDescriptor = { extents: [], ddb: {} };
  for (const raw of text.replace(/\0+$/, '').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let m: RegExpExecArray | null;
    if ((m = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)\s+"([^"]*)"/.exec(line))) {
      d.extents.push({ access: m[1], sectors: Number(m[2]), type: m[3], file: m[4] });
    } else if ((m = /^ddb\.(\S+)\s*=\s*"(.*)"$/.exec(line))) {
      d.ddb[m[1]] = m[2];
    } else if ((m = /^(\w+)\s*=\s*"?([^"]*)"?$/.exec(line))) {
      if (m[1] === 'CID') d.cid = m[2];
      else if (m[1] === 'parentCID') d.parentCid = m[2];
      else if (m[1] === 'createType') d.createType = m[2];
    }
  }
  return d;
}

/**
 * Returns a copy of the descriptor bytes with its CID line set to `cid` (8 lowercase hex digits).
 * qemu-img writes the CID with `%x`, so it has 1 to 8 digits; the text after it moves, and the
 * descriptor keeps its size (it is zero-padded to whole sectors).
 */
export function setDescriptorCid(descriptor: Buffer, cid: string): Buffer {
  if (!/^[0-9a-f]{8}$/.test(cid)) throw new Error(`bad VMDK CID ${cid}`);
  const end = descriptor.indexOf(0);
  const text = descriptor.toString('latin1', 0, end < 0 ? descriptor.length : end);
  const m = /(^|\n)CID=([0-9a-fA-F]{1,8})\n/.exec(text);
  if (!m) throw new KilnError(`expected a CID line in the VMDK descriptor qemu-img wrote, found no CID line (descriptor starts: ${JSON.stringify(text.slice(0, 160))})`, { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  const at = m.index + m[1].length + 'CID='.length;
  const patched = text.slice(0, at) + cid + text.slice(at + m[2].length);
  if (patched.length > descriptor.length) throw new KilnError('expected zero padding after the VMDK descriptor qemu-img wrote, found no room for an 8-digit CID', { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  const out = Buffer.alloc(descriptor.length);
  out.write(patched, 0, 'latin1');
  return out;
}
