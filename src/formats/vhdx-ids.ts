/**
 * qemu-img writes VHDX files with random identifiers (MS-VHDX v1.0): FileWriteGuid, DataWriteGuid
 * and a random starting SequenceNumber in both headers, the (already replayed) log entries, and
 * the Page 83 virtual disk id in the metadata region. This plans the patches that replace them
 * with values derived from the release (the log: zeros, an empty log), and the CRC-32C checksums.
 * Pure: it reads through `read` and returns byte patches.
 */
import { crc32c } from './crc32c.js';
import { guidBytes, releaseUuid } from './ids.js';
import { KilnError } from '../errors.js';

export const VHDX_HEADER_OFFSETS = [64 * 1024, 128 * 1024] as const;
export const VHDX_REGION_TABLE_OFFSET = 192 * 1024;
const HEADER_SIZE = 4096;
/** GUIDs as stored on disk (Microsoft byte order). */
export const METADATA_REGION_GUID = guidBytes(Buffer.from('8b7ca20647904b9ab8fe575f050f886e', 'hex'));
export const PAGE83_ITEM_GUID = guidBytes(Buffer.from('beca12abb2e6452393efc309e000c746', 'hex'));

export interface BytePatch { offset: number; data: Buffer }
export type ReadAt = (offset: number, length: number) => Buffer;

const isZero = (b: Buffer) => b.every((x) => x === 0);

export function planVhdxPatches(read: ReadAt, name: string, version: string): BytePatch[] {
  if (read(0, 8).toString('latin1') !== 'vhdxfile') throw new KilnError(`${name}: expected a VHDX file from qemu-img (starting with "vhdxfile"), got something else`, { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  const guids = new Map<string, Buffer>();
  const derive = (orig: Buffer): Buffer => {
    if (isZero(orig)) return orig;
    const key = orig.toString('hex');
    let g = guids.get(key);
    if (!g) {
      g = guidBytes(releaseUuid(`vhdx-guid-${guids.size}`, name, version));
      guids.set(key, g);
    }
    return g;
  };
  const patches: BytePatch[] = [];

  const headers = VHDX_HEADER_OFFSETS.map((off) => ({ off, buf: Buffer.from(read(off, HEADER_SIZE)) }));
  for (const h of headers) if (h.buf.toString('latin1', 0, 4) !== 'head') throw new KilnError(`${name}: expected a VHDX header with the 'head' signature at byte ${h.off}`, { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  const seqs = headers.map((h) => h.buf.readBigUInt64LE(8));
  const minSeq = seqs.reduce((a, b) => (b < a ? b : a));
  headers.forEach((h, i) => {
    // Keep which header is current (the higher sequence number) but start the count at 1.
    h.buf.writeBigUInt64LE(seqs[i] - minSeq + 1n, 8);
    for (const at of [16, 32, 48]) derive(h.buf.subarray(at, at + 16)).copy(h.buf, at);
    h.buf.writeUInt32LE(0, 4);
    h.buf.writeUInt32LE(crc32c(h.buf), 4);
    patches.push({ offset: h.off, data: h.buf });
  });

  // The log. qemu-img closes the file with the log replayed and LogGuid zero in both headers, which
  // tells every reader not to replay it (MS-VHDX, the header's LogGuid); its entries stay behind all the same, with
  // a random LogGuid each and, in the first, a stale BAT sector and sequence number that differ
  // between two conversions of the same raw (found by the step-cache e2e). An empty log is zeros.
  const current = headers[seqs[0] > seqs[1] ? 0 : 1].buf;
  if (!isZero(current.subarray(48, 64))) throw new KilnError(`${name}: the VHDX qemu-img wrote has a log still to replay (LogGuid is not zero)`, { hint: 'Kiln expects qemu-img to close the file cleanly; check `qemu-img --version` and run `kiln doctor`' });
  const logLength = current.readUInt32LE(68);
  const logOffset = Number(current.readBigUInt64LE(72));
  if (logLength % (1024 * 1024) !== 0 || logOffset % (1024 * 1024) !== 0 || logOffset < 1024 * 1024) throw new KilnError(`${name}: expected the VHDX log at a 1 MiB multiple, got ${logLength} bytes at ${logOffset}`, { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  patches.push({ offset: logOffset, data: Buffer.alloc(logLength) });

  // Page 83 data: the virtual disk id, found through the region table and the metadata table.
  const rt = read(VHDX_REGION_TABLE_OFFSET, 64 * 1024);
  if (rt.toString('latin1', 0, 4) !== 'regi') throw new KilnError(`${name}: expected the VHDX region table's 'regi' signature`, { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  const count = rt.readUInt32LE(8);
  let metaOffset = -1;
  for (let i = 0; i < count; i++) {
    const e = rt.subarray(16 + i * 32, 48 + i * 32);
    if (e.subarray(0, 16).equals(METADATA_REGION_GUID)) metaOffset = Number(e.readBigUInt64LE(16));
  }
  if (metaOffset < 0) throw new KilnError(`${name}: expected a metadata region in the VHDX region table, found none`, { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  const mt = read(metaOffset, 64 * 1024);
  if (mt.toString('latin1', 0, 8) !== 'metadata') throw new KilnError(`${name}: expected the VHDX metadata table's 'metadata' signature`, { hint: 'Kiln patches what qemu-img (qemu-utils) writes; check `qemu-img --version` and run `kiln doctor`' });
  const entries = mt.readUInt16LE(10);
  for (let i = 0; i < entries; i++) {
    const e = mt.subarray(32 + i * 32, 64 + i * 32);
    if (!e.subarray(0, 16).equals(PAGE83_ITEM_GUID)) continue;
    const at = metaOffset + e.readUInt32LE(16);
    patches.push({ offset: at, data: Buffer.from(derive(read(at, 16))) });
  }
  return patches;
}
