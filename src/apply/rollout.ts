/**
 * Rolling upgrades: the batches of a rollout (`--batch`, with Ansible's `serial` semantics), how many
 * failed hosts stop it (`--max-failures`), the order hosts are taken in, and the record that lets
 * `--resume` continue a stopped or interrupted rollout. The record lives in Kiln's state directory
 * (`$KILN_STATE_DIR/rollouts`, 0600) and is written after every batch; it decides only which hosts
 * are contacted again, never what is applied (that is the release, verified on every run).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { kilnStateDir } from '../store/seen.js';

/** One step of --batch: a number of hosts, or a percentage of all the rollout's hosts. */
export type BatchSize = { count: number } | { percent: number };

/** `--batch 1`, `--batch 25%`, or a list `1,10%,50%` whose last size repeats (as Ansible's `serial: [1, "10%", "50%"]`). */
export function parseBatchSpec(spec: string): BatchSize[] {
  const parts = spec.split(',').map((p) => p.trim());
  return parts.map((p) => {
    const m = /^([0-9]{1,6})(%?)$/.exec(p);
    const n = m ? Number(m[1]) : NaN;
    if (!m || n < 1 || (m[2] && n > 100)) {
      throw new KilnError(`--batch ${JSON.stringify(spec)}: ${JSON.stringify(p)} is not a batch size`, { hint: 'pass a number of hosts (--batch 2), a percentage of them (--batch 25%), or a list whose last size repeats (--batch 1,25%,100%)', exitCode: 2 });
    }
    return m[2] ? { percent: n } : { count: n };
  });
}

/** A size as a number of hosts out of total: a percentage rounds down, and is at least one host (as Ansible's). */
function hostsOf(size: BatchSize, total: number): number {
  return 'count' in size ? size.count : Math.max(1, Math.floor((size.percent * total) / 100));
}

/** The hosts in batches, in order. The last size repeats until every host has a batch. */
export function planBatches(hosts: string[], sizes: BatchSize[]): string[][] {
  if (!sizes.length) throw new KilnError('--batch needs at least one size', { exitCode: 2 });
  const out: string[][] = [];
  for (let i = 0, at = 0; at < hosts.length; i++) {
    const n = hostsOf(sizes[Math.min(i, sizes.length - 1)], hosts.length);
    out.push(hosts.slice(at, at + n));
    at += n;
  }
  return out;
}

/** `--max-failures N` or `N%` (of all the rollout's hosts, rounded down) as a number of hosts; default 0. */
export function parseMaxFailures(spec: string | undefined, total: number): number {
  if (spec === undefined) return 0;
  const m = /^([0-9]{1,6})(%?)$/.exec(spec.trim());
  if (!m || (m[2] && Number(m[1]) > 100)) {
    throw new KilnError(`--max-failures ${JSON.stringify(spec)}: expected a number of hosts or a percentage of them (e.g. 1 or 10%)`, { exitCode: 2 });
  }
  return m[2] ? Math.floor((Number(m[1]) * total) / 100) : Number(m[1]);
}

/** What `ansible-inventory --list` prints: groups with their hosts and child groups, in the inventory's order. */
interface InventoryList { [group: string]: { hosts?: string[]; children?: string[] } | unknown }

/**
 * The inventory's hosts in the order a person reads the inventory: from `all`, each group's own hosts,
 * then its child groups, depth first, each host where it first appears. So the group written first
 * (a canary group) is rolled out first, and `--host` hosts go in the order given.
 */
export function inventoryOrder(list: InventoryList): string[] {
  const seen = new Set<string>();
  const visited = new Set<string>();
  const walk = (name: string) => {
    if (visited.has(name)) return;
    visited.add(name);
    const g = list[name] as { hosts?: unknown; children?: unknown } | undefined;
    if (!g || typeof g !== 'object') return;
    if (Array.isArray(g.hosts)) for (const h of g.hosts) if (typeof h === 'string') seen.add(h);
    if (Array.isArray(g.children)) for (const c of g.children) if (typeof c === 'string') walk(c);
  };
  walk('all');
  return [...seen];
}

/*
 * Batches reach Ansible as --limit lists, where "," separates names and ":", "&", "!", "~", "*", "?"
 * and "[" are pattern syntax: a host named with them could select other hosts than the batch.
 */
const LIMIT_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** `--limit` for exactly these inventory names. */
export function limitArgs(ids: string[]): string[] {
  const bad = ids.filter((id) => !LIMIT_NAME.test(id));
  if (bad.length) {
    throw new KilnError(`inventory host name ${JSON.stringify(bad[0])} cannot be limited to on its own: Ansible reads characters of it as a host pattern`, {
      hint: 'name hosts with letters, digits, "_", "." and "-", and put the address in ansible_host (an IPv6 address too)', exitCode: 2,
    });
  }
  return ['--limit', ids.join(',')];
}

/** A host's last result in a rollout. */
export type RolloutHostStatus = 'upgraded' | 'unchanged' | 'failed' | 'unhealthy';

export interface RolloutRecord {
  kind: 'kiln-rollout';
  format: 1;
  /** name@version. */
  release: string;
  commit: string;
  /** --batch as given, and the batches it made (inventory names). Kept: a resumed rollout keeps its batches. */
  batch: string;
  batches: string[][];
  /** Each host's result from the runs so far (a host absent has not been applied). */
  hosts: Record<string, { status: RolloutHostStatus; batch: number; at: string; why?: string }>;
  stopped?: { batch: number; reason: string; at: string };
  updated: string;
}

export const DONE: ReadonlySet<string> = new Set<RolloutHostStatus>(['upgraded', 'unchanged']);

/** The file of the rollout of release to exactly this set of hosts (names, in any order). */
export function rolloutFile(release: string, hosts: string[], env = process.env): string {
  const key = createHash('sha256').update([release, ...[...hosts].sort()].join('\0')).digest('hex').slice(0, 32);
  return join(kilnStateDir(env), 'rollouts', `${key}.json`);
}

/** The record of a rollout, or undefined. One that is not a record Kiln wrote is refused, with its path. */
export function readRollout(file: string): RolloutRecord | undefined {
  if (!existsSync(file)) return undefined;
  let r: RolloutRecord;
  try {
    r = JSON.parse(readFileSync(file, 'utf8')) as RolloutRecord;
  } catch (e) {
    throw new KilnError(`${file}: not a rollout record Kiln wrote (${(e as Error).message})`, { hint: 'delete it to start the rollout again from its first batch' });
  }
  const ok = r && r.kind === 'kiln-rollout' && r.format === 1 && typeof r.release === 'string' && typeof r.commit === 'string' && typeof r.batch === 'string'
    && Array.isArray(r.batches) && r.batches.every((b) => Array.isArray(b) && b.every((h) => typeof h === 'string'))
    && typeof r.hosts === 'object' && r.hosts !== null && Object.values(r.hosts).every((h) => h && typeof h.status === 'string' && typeof h.batch === 'number');
  if (!ok) throw new KilnError(`${file}: not a rollout record Kiln wrote`, { hint: 'delete it to start the rollout again from its first batch' });
  return r;
}

/** Writes the record atomically (a crash leaves the old one or the new one), readable by the user only. */
export function writeRollout(file: string, r: RolloutRecord): void {
  mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(r, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

export function removeRollout(file: string): void {
  rmSync(file, { force: true });
}

/** The batches still to run on resume: each batch's hosts not done yet, empty batches left out (with their numbers). */
export function pendingBatches(r: Pick<RolloutRecord, 'batches' | 'hosts'>): { index: number; hosts: string[] }[] {
  return r.batches
    .map((hosts, index) => ({ index, hosts: hosts.filter((h) => !DONE.has(r.hosts[h]?.status ?? '')) }))
    .filter((b) => b.hosts.length);
}
