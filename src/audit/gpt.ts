/**
 * Finding the root filesystem of an image for the audit. The GPT itself is parsed by src/disk/gpt.ts
 * (the same code that writes Kiln's disks); the audit adds the candidates' order and a check that
 * the partition really holds an ext filesystem, and accepts a bare filesystem image.
 */
import { PART_TYPE, type GptEntry } from '../disk/gpt.js';

/** The root filesystem partition: x86-64 root type first, then generic Linux data, in table order. */
export function rootCandidates(entries: GptEntry[]): GptEntry[] {
  return [...entries.filter((p) => p.type === PART_TYPE.rootX86_64), ...entries.filter((p) => p.type === PART_TYPE.linuxData)];
}

/** True when the 2 KiB at a filesystem's start carry the ext2/3/4 superblock magic. */
export function isExtSuperblock(head: Buffer): boolean {
  return head.length >= 1082 && head.readUInt16LE(1024 + 56) === 0xef53;
}
