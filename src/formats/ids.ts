/**
 * Every identifier a format would otherwise take from randomness or the clock is derived here
 * from the image name and version, so the same release always gets the same bytes.
 */
import { createHash } from 'node:crypto';

/** Namespace of Kiln's name-based UUIDs (a fixed, random v4 UUID). */
export const KILN_UUID_NAMESPACE = '6f1c7d0e-8a2b-4c55-9d3e-2b7f4a1c9e60';

export function uuidToBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a UUID: ${uuid}`);
  return Buffer.from(hex, 'hex');
}

export function bytesToUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** RFC 4122 version-5 (SHA-1, name-based) UUID, as 16 bytes in RFC (big-endian) order. */
export function uuidV5(namespace: string, name: string): Buffer {
  const h = createHash('sha1').update(uuidToBytes(namespace)).update(name, 'utf8').digest();
  const b = Buffer.from(h.subarray(0, 16));
  b[6] = (b[6] & 0x0f) | 0x50;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

/** The UUID for one purpose (e.g. "vhd-unique-id") of one release. */
export function releaseUuid(purpose: string, name: string, version: string): Buffer {
  return uuidV5(KILN_UUID_NAMESPACE, `${purpose}:${name}@${version}`);
}

/**
 * Microsoft GUID byte order (as in VHDX): the first three fields little-endian, the rest as is.
 * `rfc` is a UUID in RFC (big-endian) byte order.
 */
export function guidBytes(rfc: Buffer): Buffer {
  const b = Buffer.from(rfc);
  b.writeUInt32LE(rfc.readUInt32BE(0), 0);
  b.writeUInt16LE(rfc.readUInt16BE(4), 4);
  b.writeUInt16LE(rfc.readUInt16BE(6), 6);
  return b;
}

/**
 * VMDK content ID: 8 lowercase hex digits. 0xffffffff means "no parent" in parentCID, so it is
 * never used as a CID.
 */
export function vmdkCid(name: string, version: string): string {
  let n = createHash('sha256').update(`vmdk-cid:${name}@${version}`).digest().readUInt32BE(0);
  if (n === 0xffffffff) n = 0xfffffffe;
  return n.toString(16).padStart(8, '0');
}
