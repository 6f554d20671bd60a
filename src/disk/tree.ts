/**
 * Preparing the root tree for mke2fs -d: writing the files the disk needs, clamping mtimes to
 * SOURCE_DATE_EPOCH (mke2fs copies them as they are), and measuring what the tree needs.
 */
import { lstatSync, lutimesSync, readdirSync } from 'node:fs';
import { lstat, lutimes, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface TreeStats {
  /** Distinct inodes (hard links counted once), directories included. */
  inodes: number;
  /** 4 KiB blocks the file data, directories and long symlinks need. */
  dataBlocks: number;
  /** Entries whose mtime was newer than SOURCE_DATE_EPOCH and was clamped. */
  clamped: number;
}

const BLOCK = 4096;

/**
 * The time every entry the build wrote carries until the disk's clamp makes it SOURCE_DATE_EPOCH
 * (2100-01-01T00:00:00Z: later than any commit). The clock's own times would work for the clamp
 * too, but they differ from build to build: marked, the provisioned tree is the same bytes and
 * times whichever build made it, so it can be cached and reused by a later commit (another
 * SOURCE_DATE_EPOCH), and the disk is still what a build from scratch makes.
 */
export const BUILD_WRITTEN_MTIME = 4102444800;

/**
 * Marks every entry of the tree modified at or after sinceMs (written by the build: the base tree's
 * files are older, mmdebstrap clamps them to the archive date) with BUILD_WRITTEN_MTIME. Returns
 * how many were marked.
 */
export function markBuildTimes(root: string, sinceMs: number): number {
  let n = 0;
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (st.mtimeMs >= sinceMs) {
      lutimesSync(path, BUILD_WRITTEN_MTIME, BUILD_WRITTEN_MTIME);
      n++;
    }
    if (st.isDirectory()) for (const e of readdirSync(path)) visit(join(path, e));
  };
  visit(root);
  return n;
}

/**
 * Walks the tree once: sets the mtime of every entry newer than `sde` to `sde` (lutimes, so
 * symlinks themselves and not their targets), and adds up what the ext4 filesystem will need.
 */
export async function clampAndMeasure(root: string, sde: number): Promise<TreeStats> {
  const limitNs = BigInt(sde) * 1_000_000_000n;
  const seen = new Set<string>();
  const stats: TreeStats = { inodes: 0, dataBlocks: 0, clamped: 0 };

  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path, { bigint: true });
    if (st.mtimeNs > limitNs) {
      await lutimes(path, sde, sde);
      stats.clamped++;
    }
    const key = `${st.dev}:${st.ino}`;
    const first = !seen.has(key);
    if (first) { seen.add(key); stats.inodes++; }
    if (st.isDirectory()) {
      const entries = await readdir(path);
      // A directory entry is 8 bytes plus the name rounded up to 4; count the dir's own blocks.
      const dirBytes = 24 + entries.reduce((n, e) => n + 8 + Math.ceil(Buffer.byteLength(e) / 4) * 4, 0);
      stats.dataBlocks += Math.max(1, Math.ceil(dirBytes / BLOCK));
      await Promise.all(entries.map((e) => visit(join(path, e))));
    } else if (first && st.isFile()) {
      const blocks = Math.ceil(Number(st.size) / BLOCK);
      // One extent tree block per ~340 extents is plenty for files that are mostly contiguous.
      stats.dataBlocks += blocks + (blocks > 4 * 32768 ? Math.ceil(blocks / (340 * 32768)) : 0);
    } else if (first && st.isSymbolicLink() && st.size >= 60n) {
      stats.dataBlocks += 1;
    }
  };
  await visit(root);
  return stats;
}

/** Journal blocks mke2fs picks for a 4 KiB-block filesystem of `blocks` blocks (ext2fs_default_journal_size). */
function journalBlocks(blocks: number): number {
  if (blocks < 2048) return 0;
  if (blocks < 32768) return 1024;
  if (blocks < 256 * 1024) return 4096;
  if (blocks < 512 * 1024) return 8192;
  if (blocks < 4096 * 1024) return 16384;
  if (blocks < 8192 * 1024) return 32768;
  if (blocks < 16384 * 1024) return 65536;
  if (blocks < 32768 * 1024) return 131072;
  return 262144;
}

export const INODE_RATIO = 16384;
export const INODE_SIZE = 256;

/**
 * Smallest ext4 size (bytes, whole MiB) that holds the tree with this layout: data, journal,
 * inode tables (one 256-byte inode per 16 KiB), other metadata, and enough inodes.
 */
export function requiredRootBytes(s: TreeStats): number {
  const data = s.dataBlocks * BLOCK;
  const minForInodes = (s.inodes + 64) * INODE_RATIO;
  let size = Math.max(data + 16 * 1024 * 1024, minForInodes);
  for (let i = 0; i < 20; i++) {
    const need = data + journalBlocks(size / BLOCK) * BLOCK + (size / INODE_RATIO) * INODE_SIZE + size * 0.02 + 4 * 1024 * 1024;
    if (need <= size) break;
    size = Math.max(need, minForInodes);
  }
  return Math.ceil(size / (1024 * 1024)) * 1024 * 1024;
}
