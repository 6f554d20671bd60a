/**
 * Sealing scrubs a provisioned root tree so every VM cloned from the image is a distinct machine
 * and nothing of the build (host identities, leases, histories, credentials) ships in it.
 * Each operation is named and described in one line, like virt-sysprep's operations.
 */
import type { Logger } from '../log.js';
import type { KeepList } from './keep.js';
import type { Finding } from '../audit/finding.js';

export interface TreeEntry {
  /** Image path, e.g. /etc/passwd. */
  path: string;
  kind: 'file' | 'dir' | 'symlink' | 'other' | 'unreadable';
  size: number;
  /** Inode number (on an image's filesystem read through FUSE, the ext4 inode). */
  ino?: number;
  /** Why an unreadable entry could not be read (e.g. EIO from a damaged or hostile directory). */
  error?: string;
}

export interface SealContext {
  logger: Logger;
  /** Paths the user declared to keep (kiln.yaml seal.keep): never touched, not reported by seal checks (secrets in them are). */
  keep: KeepList;
  /** Timestamp (seconds) for files the seal creates, so rebuilds stay reproducible. */
  sourceDateEpoch?: number;
  /** Every entry of the scanned part of the tree (see SCAN_SKIP), walked once and cached. */
  entries(): Promise<TreeEntry[]>;
}

export interface SealOperation {
  name: string;
  /** One line, shown by `kiln seal --list`. */
  description: string;
  /** Scrubs the tree; returns the image paths it removed or changed. */
  apply(root: string, ctx: SealContext): Promise<string[]>;
  /** What apply would fix, without changing anything. */
  check(root: string, ctx: SealContext): Promise<Finding[]>;
}

export interface SealReport {
  /** Per enabled operation, in the order they ran, the image paths removed or changed. */
  operations: { name: string; changed: string[] }[];
  disabled: string[];
}
