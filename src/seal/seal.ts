/**
 * sealTree: run every enabled seal operation over a provisioned root tree, in order.
 * The build calls it after provisioning; the audit (auditTree / auditImage) then proves it.
 */
import { resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { KeepList } from './keep.js';
import { enabledOperations, sealOperations } from './operations.js';
import { walk } from './tree.js';
import type { SealContext, SealReport, TreeEntry } from './types.js';

export interface SealOptions {
  /** Operation names to skip (kiln.yaml seal.disable). */
  disable?: readonly string[];
  /** Paths to leave alone (kiln.yaml seal.keep). */
  keep?: readonly string[];
  logger?: Logger;
  /** Timestamp for files the seal creates (first-boot units). */
  sourceDateEpoch?: number;
}

export function sealContext(root: string, opts: SealOptions): SealContext & { invalidate(): void } {
  let cache: TreeEntry[] | undefined;
  return {
    logger: opts.logger ?? silentLogger,
    keep: new KeepList(opts.keep ?? []),
    sourceDateEpoch: opts.sourceDateEpoch,
    entries: async () => (cache ??= walk(root)),
    invalidate: () => { cache = undefined; },
  };
}

export async function sealTree(root: string, opts: SealOptions = {}): Promise<SealReport> {
  if (resolve(root) === '/') throw new KilnError('refusing to seal / (the build host itself)', { hint: 'sealTree takes the image\'s root tree, a directory in the build\'s work area' });
  const ops = enabledOperations(opts.disable);
  const ctx = sealContext(root, opts);
  const report: SealReport = { operations: [], disabled: sealOperations.filter((o) => !ops.includes(o)).map((o) => o.name) };
  for (const op of ops) {
    const changed = await op.apply(root, ctx);
    ctx.invalidate();
    ctx.logger.debug(`seal ${op.name}: ${changed.length} path(s)${changed.length ? `: ${changed.slice(0, 5).join(' ')}${changed.length > 5 ? ' …' : ''}` : ''}`);
    report.operations.push({ name: op.name, changed });
  }
  const total = report.operations.reduce((n, o) => n + o.changed.length, 0);
  ctx.logger.info(`sealed: ${ops.length} operations, ${total} path(s) removed or changed${report.disabled.length ? `; disabled: ${report.disabled.join(', ')}` : ''}`);
  return report;
}
