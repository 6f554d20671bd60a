/**
 * What a disk image file is, judged from its own bytes before any tool opens it. qemu-img follows
 * what an image names outside itself (a qcow2 backing file or external data file, a VMDK
 * descriptor's extents, a parent disk) and would pull host files or devices into what Kiln reads,
 * so an image downloaded from elsewhere is classified here first, and refused unless it is one
 * self-contained file. Pure: tests feed it bytes.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { KilnError } from '../errors.js';
import type { FormatSpec } from '../formats/registry.js';

/** qemu-img's names for the disk formats Kiln writes and reads (src/formats/registry.ts). */
export type DiskFormat = NonNullable<FormatSpec['qemuImg']>;

export interface DiskFileFacts {
  format: DiskFormat;
  /** Why it is this format, for --verbose (e.g. "qcow2 version 3, no backing file"). */
  detail: string;
}

/** Bytes classifyDisk needs from the start of the file. */
export const HEAD_BYTES = 64 * 1024;
/** Bytes classifyDisk needs from the end of the file (a VHD footer). */
export const TAIL_BYTES = 512;

function refuse(file: string, what: string, hint?: string): never {
  throw new KilnError(`${file}: ${what}`, {
    hint: hint ?? 'Kiln reads only self-contained images: a file that names no other file. Convert it to one first (qemu-img convert -O qcow2 on a machine you trust).',
  });
}

function descriptorValue(text: string, key: string): string | undefined {
  const m = new RegExp(`^\\s*${key}\\s*=\\s*"?([^"\\n]*)"?\\s*$`, 'mi').exec(text);
  return m?.[1].trim();
}

/** VMDK descriptor rules: one sparse extent in this file, no parent. */
function checkVmdkDescriptor(file: string, text: string): string {
  const type = descriptorValue(text, 'createType') ?? '';
  if (!['monolithicSparse', 'streamOptimized'].includes(type)) {
    refuse(file, `a VMDK of type "${type || 'unknown'}": its data lives in other files (extents) that Kiln will not open`);
  }
  const parent = descriptorValue(text, 'parentCID');
  if ((parent && parent.toLowerCase() !== 'ffffffff') || /^\s*parentFileNameHint\s*=/mi.test(text)) {
    refuse(file, 'a VMDK with a parent disk (parentCID/parentFileNameHint): it reads from another file');
  }
  const extents = text.split('\n').filter((l) => /^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+/.test(l));
  if (extents.length > 1 || extents.some((l) => !/\sSPARSE\s/.test(` ${l} `))) {
    refuse(file, `a VMDK whose descriptor names ${extents.length} extent(s) of other kinds: ${extents.map((l) => l.trim()).join('; ')}`);
  }
  return `VMDK ${type}, one sparse extent, no parent`;
}

/**
 * The format of a disk image from its first HEAD_BYTES and last TAIL_BYTES, refusing anything
 * that would make qemu-img read another file. `file` only names it in errors.
 */
export function classifyDisk(file: string, head: Buffer, tail: Buffer, size: number): DiskFileFacts {
  const magic = head.subarray(0, 4).toString('latin1');
  if (magic === 'QFI\xfb') {
    if (head.length < 104) refuse(file, 'a qcow2 header cut short', 'the file is truncated');
    const version = head.readUInt32BE(4);
    if (version < 2) refuse(file, `qcow version ${version}: not supported`, 'convert it to qcow2 version 3 (qemu-img convert -O qcow2)');
    if (head.readBigUInt64BE(8) !== 0n) {
      const off = Number(head.readBigUInt64BE(8));
      const len = head.readUInt32BE(16);
      const name = off + len <= head.length ? head.subarray(off, off + len).toString('utf8') : '(beyond the header)';
      refuse(file, `a qcow2 with a backing file (${JSON.stringify(name)}): reading it would read that file too`);
    }
    if (head.readUInt32BE(32) !== 0) refuse(file, 'an encrypted qcow2: Kiln cannot read it', 'decrypt it first');
    if (version >= 3 && (head.readBigUInt64BE(72) & 0x4n) !== 0n) {
      refuse(file, 'a qcow2 whose data lives in an external data file: reading it would read that file');
    }
    return { format: 'qcow2', detail: `qcow2 version ${version}, no backing file, no external data file` };
  }
  if (magic === 'KDMV') {
    if (head.length < 512) refuse(file, 'a VMDK header cut short', 'the file is truncated');
    const descOffset = Number(head.readBigUInt64LE(28)) * 512;
    const descSize = Number(head.readBigUInt64LE(36)) * 512;
    let text = '';
    if (descOffset > 0 && descSize > 0) {
      if (descOffset + descSize > head.length) refuse(file, `a VMDK whose descriptor (at byte ${descOffset}, ${descSize} bytes) lies outside its header area`);
      text = head.subarray(descOffset, descOffset + descSize).toString('latin1').replace(/\0+$/, '');
    }
    // A sparse VMDK without an embedded descriptor has no parent and no extents to name.
    return { format: 'vmdk', detail: text ? checkVmdkDescriptor(file, text) : 'VMDK sparse, no descriptor' };
  }
  if (head.subarray(0, 21).toString('latin1') === '# Disk DescriptorFile') {
    refuse(file, 'a VMDK descriptor file: the disk data lives in the extent files it names, which Kiln will not open');
  }
  if (magic === 'COWD') refuse(file, 'a VMware ESX/COWD disk: not supported', 'convert it to a monolithic sparse VMDK or qcow2');
  if (magic === 'QED\0') refuse(file, 'a QED image: not supported (it can name a backing file)', 'convert it to qcow2');
  if (head.length >= 68 && head.readUInt32LE(64) === 0xbeda107f) refuse(file, 'a VirtualBox VDI image: not supported', 'convert it to qcow2');
  if (head.subarray(0, 6).toString('latin1') === 'LUKS\xba\xbe') refuse(file, 'a LUKS-encrypted volume: Kiln cannot read it');
  if (head.subarray(0, 8).toString('latin1') === 'vhdxfile') {
    // qemu's vhdx driver refuses differencing disks (those with a parent locator) itself.
    return { format: 'vhdx', detail: 'VHDX' };
  }
  if (head.subarray(0, 8).toString('latin1') === 'conectix') {
    const type = head.readUInt32BE(60);
    if (type === 4) refuse(file, 'a differencing VHD: it reads from a parent disk');
    if (type !== 3) refuse(file, `a VHD with a footer copy at the start and disk type ${type}: not a dynamic VHD Kiln can read`);
    return { format: 'vpc', detail: 'dynamic VHD' };
  }
  if (size >= 512 && tail.length >= 512 && tail.subarray(tail.length - 512, tail.length - 504).toString('latin1') === 'conectix') {
    const type = tail.readUInt32BE(tail.length - 512 + 60);
    if (type !== 2) refuse(file, `a VHD whose footer says disk type ${type} but has no header copy at the start`);
    // A fixed VHD is the raw disk followed by a 512-byte footer: read as raw, the GPT is found as usual.
    return { format: 'raw', detail: 'fixed VHD (raw disk + footer)' };
  }
  return { format: 'raw', detail: 'raw (no known image header)' };
}

/** Reads the bytes classifyDisk needs and classifies the file. */
export function inspectDiskFile(path: string, shown = path): DiskFileFacts {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(Math.min(HEAD_BYTES, size));
    readSync(fd, head, 0, head.length, 0);
    const tail = Buffer.alloc(Math.min(TAIL_BYTES, size));
    readSync(fd, tail, 0, tail.length, size - tail.length);
    return classifyDisk(shown, head, tail, size);
  } finally {
    closeSync(fd);
  }
}

/** The file's format from its header, checked against what the caller said it is. */
export function checkedDiskFormat(path: string, shown: string, expected?: string): DiskFileFacts {
  const facts = inspectDiskFile(path, shown);
  // A fixed VHD is a raw disk with a footer: `--format vpc` names it, and raw reads it.
  const same = !expected || expected === facts.format || (expected === 'vpc' && facts.format === 'raw' && facts.detail.startsWith('fixed VHD'));
  if (!same) throw new KilnError(`${shown} is ${facts.detail}, not ${expected}`, { hint: 'leave out --format: Kiln reads the format from the file' });
  return facts;
}

/**
 * qemu-img's filename for a classified image: a json: description that opens exactly this file
 * with this driver and no backing chain, so nothing the image names can be opened.
 */
export function qemuSource(path: string, format: DiskFormat): string {
  if (!path.startsWith('/')) throw new Error(`qemuSource needs an absolute path, got ${path}`);
  const file = { driver: 'file', filename: path };
  const spec = format === 'raw' ? { driver: 'raw', file } : { driver: format, file, ...(format === 'qcow2' || format === 'vmdk' ? { backing: null } : {}) };
  return `json:${JSON.stringify(spec)}`;
}
