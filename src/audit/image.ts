/**
 * auditImage: audit a disk image without booting it. Non-raw formats become a temporary raw
 * (qemu-img convert), the root ext4 partition is found from the GPT, and debugfs copies the
 * filesystem out read-only (`rdump` through `?offset=`, no loop device, no mount). Temporary
 * files are removed whatever happens.
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, output } from '../exec.js';
import { silentLogger } from '../log.js';
import type { Finding } from '../seal/types.js';
import { dumpExt4 } from '../disk/ext4.js';
import { gptBytesNeeded, GptError, parseGpt, parseGptHeader, SECTOR, type GptEntry } from '../disk/gpt.js';
import { isExtSuperblock, rootCandidates } from './gpt.js';
import { auditTree, type AuditOptions } from './tree.js';

export interface ImageAuditOptions extends AuditOptions {
  /** qemu-img format name (raw, qcow2, vmdk, vpc, vhdx); detected when absent. A fixed VHD is detected as raw, which reads correctly. */
  format?: string;
  /** Where temporary files go (default: the OS temp dir). */
  workDir?: string;
}

export async function detectFormat(image: string, logger = silentLogger): Promise<string> {
  const info = JSON.parse(await output('qemu-img', ['info', '--output=json', image], { logger, hint: 'is this a disk image?' })) as { format?: string };
  if (!info.format) throw new KilnError(`cannot tell the format of ${image}`, { hint: 'pass --format (raw, qcow2, vmdk, vpc, vhdx)' });
  return info.format;
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  const n = readSync(fd, b, 0, length, offset);
  return b.subarray(0, n);
}

/** Byte offset of the root ext4 filesystem in a raw disk (0 for a bare filesystem image). */
export function rootOffset(raw: string): number {
  const fd = openSync(raw, 'r');
  try {
    const head = readAt(fd, 0, 2 * SECTOR);
    if (head.subarray(SECTOR, SECTOR + 8).toString('latin1') === 'EFI PART') {
      let entries: GptEntry[];
      try {
        entries = parseGpt(readAt(fd, 0, gptBytesNeeded(parseGptHeader(head.subarray(SECTOR))))).entries;
      } catch (e) {
        if (e instanceof GptError) throw new KilnError(`${raw}: unreadable partition table: ${e.message}`);
        throw e;
      }
      const root = rootCandidates(entries).find((p) => isExtSuperblock(readAt(fd, p.firstLba * SECTOR, 2048)));
      if (!root) {
        throw new KilnError(`no ext4 root partition in ${raw}`, {
          detail: entries.map((p) => `partition ${p.index}: type ${p.type} "${p.name}" at LBA ${p.firstLba}`).join('\n') || 'the partition table is empty',
          hint: 'Kiln audits images whose root is ext4 in a Linux root (4F68BCE3-…) or Linux data (0FC63DAF-…) partition',
        });
      }
      return root.firstLba * SECTOR;
    }
    if (isExtSuperblock(readAt(fd, 0, 2048))) return 0;
  } finally {
    closeSync(fd);
  }
  throw new KilnError(`${raw}: no GPT partition table and no ext4 filesystem`, { hint: 'is the format right? pass --format if detection guessed wrong' });
}

export async function auditImage(image: string, opts: ImageAuditOptions = {}): Promise<Finding[]> {
  const logger = opts.logger ?? silentLogger;
  const path = resolve(image);
  if (!existsSync(path) || !statSync(path).isFile()) throw new KilnError(`no such image: ${image}`);
  const base = opts.workDir ?? tmpdir();
  mkdirSync(base, { recursive: true });
  const work = mkdtempSync(join(base, 'kiln-audit-'));
  try {
    const format = opts.format ?? await detectFormat(path, logger);
    let raw = path;
    if (format !== 'raw') {
      raw = join(work, 'disk.raw');
      logger.debug(`audit: converting ${format} to raw`);
      await exec('qemu-img', ['convert', '-f', format, '-O', 'raw', path, raw], { logger, hint: `is ${image} really ${format}?` });
    }
    const offset = rootOffset(raw);
    const tree = join(work, 'root');
    mkdirSync(tree);
    // debugfs opens read-only without -w and exits 0 even when it fails, so judge by what it wrote.
    const r = await dumpExt4(raw, offset, tree, logger);
    if (readdirSync(tree).length === 0) {
      throw new KilnError(`could not read the root filesystem of ${image} (offset ${offset})`, { where: { command: 'debugfs rdump' }, detail: r.stderr });
    }
    return await auditTree(tree, opts);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
