/**
 * auditImage: audit a disk image without booting it. The file is classified from its own bytes
 * first (src/image/disk-file.ts: anything naming another file is refused); other formats become a
 * temporary raw (qemu-img convert, backing chains off); the root ext4 partition is found from the
 * GPT (src/image/root-fs.ts); and the filesystem is read losslessly through fuse2fs in a mount namespace of its own
 * (src/image/mount.ts): no loop device, no mount on the host, nothing written outside the scratch
 * directory, setuid bits, capabilities and hard links as they ship. Temporary files are removed
 * whatever happens.
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { silentLogger } from '../log.js';
import type { Finding } from './finding.js';
import { checkedDiskFormat, qemuSource, type DiskFileFacts } from '../image/disk-file.js';
import { readInodes } from '../image/inode-stream.js';
import { withMountedFilesystem } from '../image/mount.js';
import { rootOffset } from '../image/root-fs.js';
import { auditTree, type AuditOptions } from './tree.js';

export interface ImageAuditOptions extends AuditOptions {
  /** qemu-img format name (raw, qcow2, vmdk, vpc, vhdx) the caller expects; checked against the file's own header. */
  format?: string;
  /** Where temporary files go (default: the OS temp dir). */
  workDir?: string;
}

/** A raw disk holding the image's bytes: the file itself, or a conversion in work that opens nothing else. */
export async function rawOf(path: string, facts: DiskFileFacts, work: string, logger = silentLogger): Promise<string> {
  if (facts.format === 'raw') return path;
  const raw = join(work, 'disk.raw');
  logger.debug(`converting ${facts.detail} to raw`);
  await exec('qemu-img', ['convert', '-O', 'raw', qemuSource(path, facts.format), raw], { logger, hint: `is ${path} a complete ${facts.format} image?` });
  return raw;
}

export { rootOffset } from '../image/root-fs.js';

export async function auditImage(image: string, opts: ImageAuditOptions = {}): Promise<Finding[]> {
  const logger = opts.logger ?? silentLogger;
  const path = resolve(image);
  if (!existsSync(path) || !statSync(path).isFile()) throw new KilnError(`no such image: ${image}`);
  const facts = checkedDiskFormat(path, image, opts.format);
  const base = opts.workDir ?? tmpdir();
  mkdirSync(base, { recursive: true });
  const work = mkdtempSync(join(base, 'kiln-audit-'));
  try {
    const raw = await rawOf(path, facts, work, logger);
    const offset = rootOffset(raw);
    // The walk and the few files the seal's checks open go through the mounted view; the bytes of
    // every file, read for the secret scan, come from one debugfs pass over the same read-only file.
    const readFiles: AuditOptions['readFiles'] = (files, sink) => readInodes(raw, offset, files, sink);
    return await withMountedFilesystem(raw, offset, work, async (t) => auditTree(t.root, { ...opts, readFiles }), logger);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
