/**
 * `kiln status`: what a fleet runs. For each host, the image, version and commit in its /etc/release
 * (one `slurp` per host, as apply's preflight); against a channel (`web@production`), whether it is
 * behind, on it, or ahead; with `check`, whether its configuration drifted from its own release: that
 * release's playbook, from its commit, in Ansible's check mode (hosts grouped by release, one run per
 * group). Nothing is changed on any host.
 */
import { KilnError } from '../errors.js';
import { compareVersions } from './version-order.js';
import { applyRelease, withSession, type ApplyRelease, type Connection } from './index.js';

/** Against a channel: 'differs' when the two versions have no numbers to order them by. */
export type Position = 'behind' | 'current' | 'ahead' | 'differs' | 'other image';

export interface HostState {
  host: string;
  /** The inventory name. */
  id: string;
  image?: string;
  version?: string;
  commit?: string;
  /** Why nothing could be read (unreachable, refused, not a Kiln image). */
  problem?: string;
  channel?: { ref: string; version: string; position: Position };
  /** With check: in sync, drift, failed (the check itself), or why it was not checked. */
  drift?: 'in sync' | 'drift' | 'failed' | 'not checked';
  changed?: string[];
  note?: string;
}

/**
 * The exit status of `kiln status`, for CI, as `kiln apply`'s: 4 when any host could not be read; else 3
 * when `--check` found drift (or could not check a host); else 0. Being behind a channel is shown, not an error.
 */
export function statusExitCode(states: HostState[]): number {
  if (states.some((s) => s.problem)) return 4;
  if (states.some((s) => s.drift && s.drift !== 'in sync')) return 3;
  return 0;
}

/** Where a host's version stands against a channel's. */
export function position(host: { image?: string; version?: string }, channel: { name: string; version: string }): Position {
  if (host.image && host.image !== channel.name) return 'other image';
  if (!host.version) return 'differs';
  const c = compareVersions(host.version, channel.version);
  return c === undefined ? 'differs' : c < 0 ? 'behind' : c > 0 ? 'ahead' : 'current';
}

export interface StatusOptions extends Connection {
  repoDir: string;
  channel?: { ref: string; name: string; version: string };
  check: boolean;
  /** The release record of name@version from the store, or a reason it cannot be checked. */
  releaseOf: (name: string, version: string) => Promise<ApplyRelease | string>;
}

export async function fleetStatus(o: StatusOptions): Promise<HostState[]> {
  const states = await withSession(o, async ({ shown, readReleases }) => {
    const { current, unread, hosts } = await readReleases();
    return hosts.map((id) => {
      const rel = current.get(id);
      const problem = unread.get(id);
      const s: HostState = { host: shown(id), id, image: rel?.IMAGE_ID, version: rel?.IMAGE_VERSION, commit: rel?.IMAGE_COMMIT, ...(problem || !rel ? { problem: problem ?? 'no /etc/release read' } : {}) };
      if (o.channel && rel) s.channel = { ref: o.channel.ref, version: o.channel.version, position: position(s, o.channel) };
      return s;
    });
  });
  if (!o.check) return states;
  // One check-mode run of each release's own playbook, on the hosts that run it.
  const groups = new Map<string, HostState[]>();
  for (const s of states.filter((x) => !x.problem && x.image && x.version)) groups.set(`${s.image}@${s.version}`, [...(groups.get(`${s.image}@${s.version}`) ?? []), s]);
  for (const [ref, group] of groups) {
    const [name, version] = [group[0].image ?? '', group[0].version ?? ''];
    const release = await o.releaseOf(name, version);
    if (typeof release === 'string') {
      for (const s of group) { s.drift = 'not checked'; s.note = release; }
      continue;
    }
    o.logger.info(`checking ${group.length} host(s) against ${ref}, in check mode`);
    let outcomes;
    try {
      outcomes = (await applyRelease({ ...o, release, check: true, diff: false, allowDowngrade: true, limit: group.map((s) => s.id) })).outcomes;
    } catch (e) {
      // A release that cannot be checked (its tag moved, its commit is not here) is that group's note, not the end of the report.
      if (!(e instanceof KilnError)) throw e;
      for (const s of group) { s.drift = 'failed'; s.note = e.message; }
      continue;
    }
    for (const s of group) {
      const out = outcomes.find((x) => x.id === s.id);
      s.drift = out?.status === 'in sync' || out?.status === 'drift' ? out.status : 'failed';
      s.changed = out?.changed ?? [];
      if (out?.failed.length) s.note = out.failed[0];
    }
  }
  for (const s of states) if (!s.problem && !s.drift) { s.drift = 'not checked'; s.note ??= 'its /etc/release names no image and version'; }
  return states;
}

/** The table `kiln status` prints. */
export function statusTable(states: HostState[], opts: { check: boolean; channel?: string }): string[] {
  const head = ['HOST', 'IMAGE', 'VERSION', 'COMMIT', ...(opts.channel ? [opts.channel.toUpperCase()] : []), ...(opts.check ? ['CONFIG'] : []), 'NOTE'];
  const rows = states.map((s) => [
    s.host, s.image ?? '-', s.version ?? '-', s.commit?.slice(0, 12) ?? '-',
    ...(opts.channel ? [s.channel ? `${s.channel.position}${s.channel.position === 'current' ? '' : ` (${s.channel.version})`}` : '-'] : []),
    ...(opts.check ? [s.drift ? `${s.drift}${s.changed?.length ? ` (${s.changed.length} task${s.changed.length === 1 ? '' : 's'})` : ''}` : '-'] : []),
    s.problem ?? s.note ?? '',
  ]);
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const lines = all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd());
  for (const s of states) for (const c of s.changed ?? []) lines.push(`  ${s.host}: would change: ${c}`);
  return lines;
}
