import { list, remove, truncate, under } from '../tree.js';
import type { TreeEntry } from '../types.js';
import type { Finding } from '../../audit/finding.js';
import type { SealOperation } from '../types.js';

/**
 * The build's logs. Live log files are emptied in place (owner, group and mode survive, and the
 * directories services write into stay); rotated copies and journal files are removed.
 */
const LOG = '/var/log';
const JOURNAL = '/var/log/journal';
const ROTATED = /\.\d+(\.(gz|xz|bz2|zst))?$|\.(gz|xz|bz2|zst|old)$/;

type Action = { path: string; how: 'remove' | 'truncate'; why: string };

function logs(root: string, entries: TreeEntry[]): Action[] {
  const out: Action[] = list(root, JOURNAL).map((n) => ({ path: `${JOURNAL}/${n}`, how: 'remove' as const, why: 'systemd journal from the build' }));
  for (const e of entries) {
    if (e.kind !== 'file' || !under(e.path, LOG) || under(e.path, JOURNAL)) continue;
    if (ROTATED.test(e.path)) out.push({ path: e.path, how: 'remove', why: 'rotated log from the build' });
    else if (e.size > 0) out.push({ path: e.path, how: 'truncate', why: 'log written during the build' });
  }
  return out;
}

export const logsOp: SealOperation = {
  name: 'logs',
  description: 'Remove journal files and rotated logs, empty the other files under /var/log (directories stay)',
  async apply(root, ctx) {
    return logs(root, await ctx.entries()).flatMap((a) => (a.how === 'remove' ? remove(root, a.path, ctx) : truncate(root, a.path, ctx)));
  },
  async check(root, ctx) {
    return logs(root, await ctx.entries()).map((a): Finding => ({ check: this.name, path: a.path, message: a.why }));
  },
};
