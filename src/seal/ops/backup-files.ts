import { under, remove } from '../tree.js';
import type { TreeEntry } from '../types.js';
import type { Finding } from '../../audit/finding.js';
import type { SealOperation } from '../types.js';
import { statInTree } from '../../image/tree.js';

/**
 * Backups in /etc: shadow's `passwd-` family (old password hashes), dpkg's and ucf's kept
 * versions, editor and maintainer-script backups (`*.bak`: systemd-resolved's postinst moves the
 * resolv.conf it replaces to /etc/.resolv.conf.systemd-resolved.bak, which in an image is the build
 * sandbox's resolver). A `name-` file counts only beside its `name`, so files that merely end in a
 * dash are left alone.
 */
const SUFFIXES = ['.dpkg-old', '.dpkg-dist', '.dpkg-bak', '.dpkg-new', '.dpkg-tmp', '.ucf-old', '.ucf-dist', '.ucf-new', '.bak', '~'];

function backups(root: string, entries: TreeEntry[]): string[] {
  return entries.filter((e) => e.kind === 'file' && under(e.path, '/etc') && (
    SUFFIXES.some((s) => e.path.endsWith(s)) || (e.path.endsWith('-') && statInTree(root, e.path.slice(0, -1))?.isFile() === true)
  )).map((e) => e.path);
}

export const backupFiles: SealOperation = {
  name: 'backup-files',
  description: 'Remove backup files in /etc (passwd- and friends, *.dpkg-old/-dist, *.ucf-old, *.bak, *~)',
  async apply(root, ctx) {
    return backups(root, await ctx.entries()).flatMap((p) => remove(root, p, ctx));
  },
  async check(root, ctx) {
    return backups(root, await ctx.entries()).map((path): Finding => ({ check: this.name, path, message: path.endsWith('-') ? 'backup copy of a system database (may hold old password hashes)' : 'leftover backup or package-manager copy' }));
  },
};
