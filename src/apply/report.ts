/**
 * What `kiln apply` prints: one line per task result as it arrives, then a summary per host with
 * the tasks that changed (or would change, in check mode) and their diffs. Pure, so it is tested
 * against made-up outcomes.
 */
import type { TaskResult } from '../provision/results.js';
import type { ApplyResult, BatchReport, HostOutcome } from './index.js';
import { firstLine } from './text.js';

export function taskLine(r: TaskResult): string {
  const why = r.status === 'failed' || r.status === 'unreachable' ? `: ${firstLine(r.msg ?? r.stderr)}` : '';
  return `  ${r.host}  ${r.status.padEnd(11)} ${r.task}${why}`;
}

export function summaryLines(outcomes: HostOutcome[], opts: { check: boolean; diff: boolean }): string[] {
  const out = [`summary (${outcomes.length} host${outcomes.length === 1 ? '' : 's'}):`];
  const width = Math.max(...outcomes.map((o) => o.host.length), 0);
  const statusWidth = Math.max(9, ...outcomes.map((o) => o.status.length));
  for (const o of outcomes) {
    const t = o.totals;
    const counts = t ? `  ok=${t.ok} changed=${t.changed} failed=${t.failures} unreachable=${t.unreachable}` : '';
    const batch = o.batch !== undefined ? `  batch ${o.batch}` : '';
    const what = o.status === 'done before' ? `${o.to} (applied by an earlier run, not contacted)` : `${o.from ?? 'unknown'} -> ${o.to}${counts}`;
    out.push(`  ${o.host.padEnd(width)}  ${o.status.padEnd(statusWidth)} ${what}${batch}${o.health === 'healthy' ? '  healthy' : ''}`);
    for (const c of o.changed) out.push(`      ${opts.check ? 'would change' : 'changed'}: ${c}`);
    for (const f of o.failed) out.push(`      failed: ${f}`);
    if (opts.diff) {
      for (const d of o.diffs ?? []) {
        for (const part of diffParts(d.diff)) {
          const before = part.before_header ?? 'before';
          // copy and template name their local temp file as the "after": show what it is instead.
          const after = !part.after_header || /ansible-local|^\/tmp\//.test(part.after_header) ? `${before} (${o.to})` : part.after_header;
          out.push(`      ${d.task}:`, `        --- ${before}`, `        +++ ${after}`);
          out.push(...lineDiff(part.before ?? '', part.after ?? '').map((l) => `        ${l}`));
        }
      }
    }
  }
  return out;
}

/** One line as a batch ends: what it did to each of its hosts. */
export function batchEndLine(b: BatchReport, outcomes: HostOutcome[]): string {
  const each = outcomes.map((o) => `${o.host} ${o.status}${o.health === 'healthy' ? ', healthy' : ''}`).join('; ');
  return `batch ${b.batch}/${b.of} ${b.result}: ${each}`;
}

/** The rollout's table of batches, why it stopped and how to go on. Nothing for a single batch that passed. */
export function rolloutLines(r: ApplyResult, opts: { batch?: string; resumeCommand: string }): string[] {
  if (r.batches.length <= 1 && !r.stopped && !r.resumable) return [];
  const out = [`batches (${r.batches.length}${opts.batch ? `, --batch ${opts.batch}` : ''}):`];
  const width = Math.max(...r.batches.map((b) => b.result.length));
  for (const b of r.batches) {
    out.push(`  ${`${b.batch}/${b.of}`.padEnd(String(b.of).length * 2 + 1)}  ${b.result.padEnd(width)}  ${b.hosts.join(', ')}${b.hostsFailed.length ? `   (failed: ${b.hostsFailed.join(', ')})` : ''}`);
  }
  if (r.stopped) {
    out.push(`rollout stopped after batch ${r.stopped.batch}/${r.batches.length}: ${r.stopped.reason}`);
    const untouched = r.outcomes.filter((o) => o.status === 'not started').map((o) => o.host);
    if (untouched.length) out.push(`  not contacted after the preflight: ${untouched.join(', ')}`);
  }
  if (r.resumable) {
    const pending = r.outcomes.filter((o) => o.status !== 'upgraded' && o.status !== 'unchanged' && o.status !== 'done before').map((o) => o.host);
    out.push(`  to go on once fixed: ${opts.resumeCommand} (applies the hosts not done: ${pending.join(', ')}; the record is ${r.resumable})`);
  }
  return out;
}

interface DiffPart { before?: string; after?: string; before_header?: string; after_header?: string }

/** Ansible reports a diff as one {before, after} object or a list of them; only text diffs are shown. */
export function diffParts(diff: unknown): DiffPart[] {
  const list = Array.isArray(diff) ? diff : [diff];
  return list.filter((p): p is DiffPart => typeof p === 'object' && p !== null && (typeof (p as DiffPart).before === 'string' || typeof (p as DiffPart).after === 'string'));
}

/** A line diff (longest common subsequence): ' ' kept, '-' only before, '+' only after. */
export function lineDiff(before: string, after: string): string[] {
  const a = splitLines(before);
  const b = splitLines(after);
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { out.push(` ${a[i]}`); i++; j++; }
    else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) { out.push(`-${a[i]}`); i++; }
    else { out.push(`+${b[j]}`); j++; }
  }
  return out;
}

function splitLines(s: string): string[] {
  if (!s) return [];
  const l = s.split('\n');
  if (l[l.length - 1] === '') l.pop();
  return l;
}

