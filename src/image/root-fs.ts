/**
 * Where an image's root filesystem starts: the one reader for the audit and `kiln rebuild`'s tree
 * diff. The GPT is parsed by src/disk/gpt.ts (the same code that writes Kiln's disks); the root is
 * the first x86-64 root partition, then the first generic Linux data partition, that really holds
 * an ext2/3/4 superblock; a bare filesystem image is its own root.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { KilnError } from '../errors.js';
import { gptBytesNeeded, GptError, parseGpt, parseGptHeader, PART_TYPE, SECTOR, type GptEntry, type GptHeader } from '../disk/gpt.js';

/** The root filesystem partition: x86-64 root type first, then generic Linux data, in table order. */
export function rootCandidates(entries: GptEntry[]): GptEntry[] {
  return [...entries.filter((p) => p.type === PART_TYPE.rootX86_64), ...entries.filter((p) => p.type === PART_TYPE.linuxData)];
}

/** True when the 2 KiB at a filesystem's start carry the ext2/3/4 superblock magic. */
export function isExtSuperblock(head: Buffer): boolean {
  return head.length >= 1082 && head.readUInt16LE(1024 + 56) === 0xef53;
}

/** Up to `length` bytes of an open file at `offset` (fewer at its end). */
export function readFd(fd: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  const n = readSync(fd, b, 0, length, offset);
  return b.subarray(0, n);
}

/** The GPT of an open disk (GptError when it is damaged), or undefined when the disk has none. */
export function gptOf(fd: number): { header: GptHeader; entries: GptEntry[] } | undefined {
  const head = readFd(fd, 0, 2 * SECTOR);
  if (head.subarray(SECTOR, SECTOR + 8).toString('latin1') !== 'EFI PART') return undefined;
  return parseGpt(readFd(fd, 0, gptBytesNeeded(parseGptHeader(head.subarray(SECTOR)))));
}

/** The root partition among a GPT's entries: the first candidate that really holds an ext2/3/4 superblock. */
export function rootPartition(fd: number, entries: GptEntry[]): GptEntry | undefined {
  return rootCandidates(entries).find((p) => isExtSuperblock(readFd(fd, p.firstLba * SECTOR, 2048)));
}

/** One line per partition, for errors that show what a disk holds. */
export function describePartitions(entries: GptEntry[]): string {
  return entries.map((p) => `partition ${p.index}: type ${p.type} "${p.name}" at LBA ${p.firstLba}`).join('\n');
}

/** Byte offset of the root ext4 filesystem in a raw disk (0 for a bare filesystem image). */
export function rootOffset(raw: string): number {
  let fd: number;
  try { fd = openSync(raw, 'r'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new KilnError(`disk image not found: ${raw}`, { where: { file: raw } });
    throw e;
  }
  try {
    let gpt: ReturnType<typeof gptOf>;
    try {
      gpt = gptOf(fd);
    } catch (e) {
      if (e instanceof GptError) throw new KilnError(`${raw}: unreadable partition table: ${e.message}`, { where: { file: raw } });
      throw e;
    }
    if (gpt) {
      const entries = gpt.entries;
      const root = rootPartition(fd, entries);
      if (!root) {
        throw new KilnError(`no ext4 root partition in ${raw}`, {
          where: { file: raw },
          detail: describePartitions(entries) || 'the partition table is empty',
          hint: 'Kiln reads images whose root is ext4 in a Linux root (4F68BCE3-…) or Linux data (0FC63DAF-…) partition',
        });
      }
      return root.firstLba * SECTOR;
    }
    if (isExtSuperblock(readFd(fd, 0, 2048))) return 0;
  } finally {
    closeSync(fd);
  }
  throw new KilnError(`${raw}: no GPT partition table and no ext4 filesystem`, { where: { file: raw }, hint: 'is the format right? pass --format if detection guessed wrong' });
}
