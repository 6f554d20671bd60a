/**
 * `kiln apply`: upgrade running machines to a release by applying exactly that release's playbook
 * (the recorded commit, checked out in a temporary git worktree) over SSH. Every host is checked
 * first (reachable, key accepted, which image and version it runs); if any check fails nothing is
 * changed anywhere. On success each host's /etc/release and os-release carry the new version.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, output, quoteArg, type ExecOptions, type ExecResult } from '../exec.js';
import type { Logger } from '../log.js';
import { parseKeyValues, releaseFile } from '../image/stamp.js';
import { eventStatus, runPlaybook, type PlaybookRun } from '../provision/run.js';
import type { HostStats, TaskResult } from '../provision/results.js';
import { checkCommit, checkName, checkTemplatePath, checkVersion } from '../store/record.js';
import { loadTemplate } from '../template/load.js';
import { inventoryLine, type ApplyHost } from './hosts.js';
import { compareVersions } from './version-order.js';
import { describeHealth, healthPlaybook, healthVerdicts } from './health.js';
import { firstLine } from './text.js';
import { DONE, inventoryOrder, limitArgs, parseBatchSpec, parseMaxFailures, pendingBatches, planBatches, readRollout, removeRollout, rolloutFile, writeRollout, type RolloutHostStatus, type RolloutRecord } from './rollout.js';
import { addWorktree, removeWorktree } from '../version/git.js';
import { endSshMaster } from '../vm/ssh.js';

export interface ApplyRelease { name: string; version: string; commit: string; tag?: string; template: string; sourceDateEpoch: number }

export interface ApplyOptions {
  release: ApplyRelease;
  /** The image's git repository (holds the release's commit). */
  repoDir: string;
  hosts: ApplyHost[];
  /** An Ansible inventory file instead of (or besides) --host. */
  inventory?: string;
  keyFile?: string;
  check: boolean;
  diff: boolean;
  allowDowngrade: boolean;
  /** Verify SSH host keys against this known_hosts file (default: the user's); off with insecureHostKeys. */
  knownHosts?: string;
  /** Pin the key of a host seen for the first time into the known_hosts file (ssh's accept-new); a changed key is still refused. */
  acceptNew?: boolean;
  insecureHostKeys: boolean;
  logger: Logger;
  /** One-line live status (the task running now). */
  onStatus?: (msg: string) => void;
  /** Each task result of the release's playbook, as it arrives (host is the name shown to the user). */
  onTask?: (result: TaskResult) => void;
  /** Only these inventory names (kiln status checks a group of hosts with it). */
  limit?: string[];
  /** A rolling upgrade: --batch as given (N, N%, or a list of them); see rollout.ts. */
  batch?: string;
  /** How many hosts may fail (N or N%) before the rollout stops; default 0. */
  maxFailures?: string;
  /** Continue the stopped rollout of this release to these hosts. */
  resume?: boolean;
  /** A batch starts, is health-checked, ends. */
  onBatch?: (e: BatchEvent) => void;
  /** The Ansible programs (default: the host's). */
  ansible?: AnsibleDriver;
}

/**
 * A host's result: in check mode drift or in sync; else upgraded or unchanged (it took the release),
 * failed (the playbook or stamp failed on it), unhealthy (it took the release and then failed the
 * health check); in a rollout also not started (a batch after the one that stopped it) and done before
 * (a resumed rollout does not contact the hosts an earlier run finished).
 */
export type HostStatus = 'upgraded' | 'unchanged' | 'drift' | 'in sync' | 'failed' | 'unhealthy' | 'not started' | 'done before';

/** One batch of a rollout (an apply without --batch is one batch of every host). */
export interface BatchReport {
  /** 1-based, of `of`. */
  batch: number;
  of: number;
  hosts: string[];
  result: 'passed' | 'failed' | 'not started' | 'done before';
  /** The hosts that failed or were unhealthy. */
  hostsFailed: string[];
}

export type BatchEvent = ({ kind: 'start' } & BatchReport) | ({ kind: 'health'; check: string } & BatchReport) | ({ kind: 'end'; outcomes: HostOutcome[] } & BatchReport);

export interface ApplyResult {
  /** Every host, in rollout order (without --batch: by name). */
  outcomes: HostOutcome[];
  batches: BatchReport[];
  /** Why the rollout stopped, after which batch. */
  stopped?: { batch: number; reason: string };
  /** The rollout's record when some hosts are not done: `--resume` continues from it. */
  resumable?: string;
  /** The health check run after each batch, as shown to the user. */
  health?: string;
}

/**
 * `kiln apply`'s exit status, for CI (as `terraform plan -detailed-exitcode`): 0 done or in sync; 1 an
 * error, a refusal, or a host that failed; 2 a command line Kiln cannot use; 3 `--check` found drift
 * (the hosts reachable and the playbook runs, but it would change something); 4 nothing was done
 * because hosts could not be reached or refused the login or host key.
 */
export const APPLY_EXIT = { ok: 0, failed: 1, drift: 3, unreachable: 4 } as const;

/** The exit status of a finished apply (a preflight refusal exits before, with its own). */
export function applyExitCode(outcomes: Pick<HostOutcome, 'status'>[]): number {
  if (outcomes.some((o) => o.status === 'failed' || o.status === 'unhealthy' || o.status === 'not started')) return APPLY_EXIT.failed;
  if (outcomes.some((o) => o.status === 'drift')) return APPLY_EXIT.drift;
  return APPLY_EXIT.ok;
}
export interface HostOutcome {
  host: string;
  /** The inventory name. */
  id: string;
  from?: string;
  to: string;
  status: HostStatus;
  changed: string[];
  failed: string[];
  totals?: HostStats;
  diffs?: TaskResult[];
  /** In a rollout, the host's batch (1-based). */
  batch?: number;
  /** After the health check: 'healthy', or why not. */
  health?: string;
}

const PREFLIGHT = `- name: kiln preflight
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: read /etc/release
      ansible.builtin.slurp: { src: /etc/release }
`;

function stampPlaybook(r: ApplyRelease): string {
  const release = releaseFile({ name: r.name, version: r.version, commit: r.commit, snapshot: false, sourceDateEpoch: r.sourceDateEpoch });
  return `- name: kiln stamp ${r.version}
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: write /etc/release
      ansible.builtin.copy: { dest: /etc/release, mode: "0644", content: ${JSON.stringify(release)} }
    - name: stamp IMAGE_VERSION in os-release
      ansible.builtin.lineinfile: { path: /etc/os-release, regexp: "^IMAGE_VERSION=", line: ${JSON.stringify(`IMAGE_VERSION="${r.version}"`)} }
    - name: stamp IMAGE_ID in os-release
      ansible.builtin.lineinfile: { path: /etc/os-release, regexp: "^IMAGE_ID=", line: ${JSON.stringify(`IMAGE_ID="${r.name}"`)} }
`;
}

/**
 * Refuses a record that does not name one full commit, its own tag and a file of the repository.
 * The record comes from a store; what it names is checked out and its playbook run as root on
 * every host, so nothing in it reaches git or the file system unchecked.
 */
export function checkRelease(r: ApplyRelease): void {
  checkName(r.name);
  checkVersion(r.version);
  const release = `${r.name}@${r.version}`;
  checkCommit(r.commit, release);
  // A release's version is the tag it was built from (src/version/git.ts): a record naming another is not one a build wrote.
  if (r.tag !== undefined && r.tag !== r.version) {
    throw new KilnError(`release ${release} records tag ${JSON.stringify(r.tag)}, but a release's tag is its version`, { hint: 'this record was not written by kiln build, or was altered: do not use it' });
  }
  checkTemplatePath(r.template, release);
}

/**
 * Checks that the release's tag names its commit now, and checks it out. The tag is the version
 * also when the record names none (every release build is tagged with its version): without a tag
 * to compare with, a record could name any commit of the repository, an unmerged branch
 * included, and its playbook would run on every host. So a tag that is missing is refused too.
 */
async function checkoutRelease(o: ApplyOptions, dir: string): Promise<void> {
  const r = o.release;
  const has = await exec('git', ['-C', o.repoDir, 'cat-file', '-e', `${r.commit}^{commit}`], { allowFailure: true });
  if (has.code !== 0) throw new KilnError(`commit ${r.commit.slice(0, 12)} of ${r.name}@${r.version} is not in the repository at ${o.repoDir}`, { hint: 'run kiln apply inside the image repository (git fetch --tags first)' });
  const tag = r.tag ?? r.version;
  const t = await exec('git', ['-C', o.repoDir, 'rev-parse', '--verify', '-q', `refs/tags/${tag}^{commit}`], { allowFailure: true });
  if (t.code !== 0) {
    throw new KilnError(`nothing was changed: release ${r.name}@${r.version} was built from tag ${tag}, which is not in the repository at ${o.repoDir}`, {
      hint: 'fetch the tags (git fetch --tags) and run kiln apply again: a release is applied only from the commit its tag names',
    });
  }
  if (t.stdout.trim() !== r.commit) {
    throw new KilnError(`nothing was changed: tag ${tag} now points to ${t.stdout.trim().slice(0, 12)}, but release ${r.name}@${r.version} was built from ${r.commit.slice(0, 12)}`, {
      hint: 'releases are immutable: a moved tag is a new version. Put the tag back, or tag the new commit with a new version and build it',
    });
  }
  await addWorktree(o.repoDir, r.commit, dir, o.logger);
}

/**
 * The real path of a file of the checked-out release, refused when it is not inside the worktree:
 * a committed symlink (kiln.yaml -> /etc/..., a playbook directory -> $HOME) must not carry the
 * run outside the commit that was checked.
 */
export function fileInTree(tree: string, file: string, what: string, release: string): string {
  const root = realpathSync(tree);
  const shown = relative(tree, resolve(tree, file));
  let real: string;
  try {
    real = realpathSync(resolve(tree, file));
  } catch {
    throw new KilnError(`release ${release}: its commit has no ${what} at ${shown}`, { hint: 'the release record names a file its commit does not have' });
  }
  const rel = relative(root, real);
  if (rel === '' || rel === '..' || rel.startsWith('../') || isAbsolute(rel)) {
    throw new KilnError(`nothing was changed: release ${release}: ${what} at ${shown} resolves to ${real}, outside the release's commit`, {
      hint: 'a symlink in the repository points out of it; kiln apply uses only files of the commit it checked',
    });
  }
  return real;
}

interface Inventory { args: string[]; names: Map<string, string> }

function writeInventory(o: Pick<ApplyOptions, 'hosts' | 'inventory'>, tmp: string): Inventory {
  const args: string[] = [];
  if (o.hosts.length) {
    const f = join(tmp, 'hosts.ini');
    // The group the build's chroot inventory uses, so a playbook written for `hosts: kiln_image` applies too.
    writeFileSync(f, ['[kiln_image]', ...o.hosts.map((h) => inventoryLine(h)), ''].join('\n'));
    args.push('-i', f);
  }
  if (o.inventory) {
    if (!existsSync(o.inventory)) throw new KilnError(`inventory not found: ${o.inventory}`, { exitCode: 2 });
    args.push('-i', resolve(o.inventory));
  }
  if (!args.length) throw new KilnError('no hosts: pass --host user@address[:port] (repeatable) or --inventory FILE', { exitCode: 2 });
  return { args, names: new Map(o.hosts.map((h) => [h.id, h.name])) };
}

/**
 * ANSIBLE_SSH_ARGS: one string, which Ansible splits with Python's shlex, so every word is quoted.
 * The known_hosts path is also read by ssh's own config parser (whitespace separates files, quotes
 * and backslashes quote, % and ${} expand), which has no quoting Kiln can rely on: such a path is refused.
 */
export function ansibleSshArgs(o: Pick<ApplyOptions, 'keyFile' | 'knownHosts' | 'insecureHostKeys' | 'acceptNew'>): string {
  if (o.acceptNew && o.insecureHostKeys) throw new KilnError('--accept-new pins host keys and --insecure-host-keys ignores them: pass one', { exitCode: 2 });
  // Host keys are checked by default, against the user's known_hosts; a first contact is pinned only when asked.
  const strict = ['-o', `StrictHostKeyChecking=${o.acceptNew ? 'accept-new' : 'yes'}`];
  let hostKeys = strict;
  if (o.insecureHostKeys) hostKeys = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];
  else if (o.knownHosts) {
    const file = resolve(o.knownHosts);
    if (/[\s"'\\%$]/.test(file)) throw new KilnError(`--known-hosts ${JSON.stringify(o.knownHosts)}: ssh cannot take a path with spaces, quotes, backslashes, % or $`, { hint: 'copy the file to a plain path', exitCode: 2 });
    if (!existsSync(file)) throw new KilnError(`known hosts file not found: ${o.knownHosts}`, { hint: o.acceptNew ? `create it empty (touch ${o.knownHosts}) to pin the keys of first contacts into it` : undefined, exitCode: 2 });
    hostKeys = ['-o', `UserKnownHostsFile=${file}`, ...strict];
  }
  return ['-o', 'ControlMaster=auto', '-o', 'ControlPersist=120s', '-o', 'BatchMode=yes', ...(o.keyFile ? ['-o', 'IdentitiesOnly=yes'] : []), ...hostKeys].map(quoteArg).join(' ');
}

/**
 * The two Ansible programs a session runs. The default runs the host's; tests give a fake that answers
 * as a fleet would (Packer's driver-and-mock pattern), so the rollout's decisions are tested without SSH.
 */
export interface AnsibleDriver {
  /** ansible-playbook with these arguments, in cwd (PlaybookRun.run's contract). */
  playbook: (args: string[], env: Record<string, string>, opts: ExecOptions & { cwd: string }) => Promise<ExecResult>;
  /** What `ansible-inventory <args> --list` prints. */
  inventory: (args: string[], cwd: string) => Promise<string>;
}

const hostAnsible: AnsibleDriver = {
  playbook: (args, env, opts) => exec('ansible-playbook', args, { ...opts, env, passEnv: ['SSH_AUTH_SOCK'] }),
  inventory: (args, cwd) => output('ansible-inventory', [...args, '--list'], { cwd, env: { ANSIBLE_LOCAL_TEMP: join(cwd, 'ansible-local') }, hint: 'the inventory could not be read' }),
};

/** How Kiln reaches the hosts: the inventory, the key, and how host keys are checked. */
export type Connection = Pick<ApplyOptions, 'hosts' | 'inventory' | 'keyFile' | 'knownHosts' | 'acceptNew' | 'insecureHostKeys' | 'logger' | 'onStatus' | 'onTask' | 'ansible'>;

/** ansible-playbook runs on the hosts of one Connection, sharing one SSH connection per host. */
export interface Session {
  tmp: string;
  /** The name shown to the user for an inventory name. */
  shown: (id: string) => string;
  run: (playbook: string, cwd: string, opts?: Partial<PlaybookRun> & { quiet?: boolean }) => ReturnType<typeof runPlaybook>;
  /** Each host's /etc/release (by inventory name), or why it could not be read; `limit`: only these inventory names. */
  readReleases: (limit?: string[]) => Promise<HostReleases & { hosts: string[] }>;
  /** The inventory's host names in order (rollout.ts inventoryOrder). */
  inventoryHosts: () => Promise<string[]>;
}

/** Runs fn with a Session, then closes the SSH connections and removes the scratch. */
export async function withSession<T>(o: Connection, fn: (s: Session) => Promise<T>): Promise<T> {
  if (o.keyFile && !existsSync(o.keyFile)) throw new KilnError(`key file not found: ${o.keyFile}`, { exitCode: 2 });
  const sshArgs = ansibleSshArgs(o);
  const ansible = o.ansible ?? hostAnsible;
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-apply-'));
  const controlDir = join(tmp, 'cp');
  mkdirSync(controlDir);
  try {
    const inv = writeInventory(o, tmp);
    const shown = (id: string) => inv.names.get(id) ?? id;
    const env = {
      ANSIBLE_HOST_KEY_CHECKING: o.insecureHostKeys ? 'False' : 'True',
      // One connection per host for the whole session, in our own directory (closed at the end): a
      // master shared with another run could outlive a key change.
      ANSIBLE_SSH_ARGS: sshArgs,
      ANSIBLE_SSH_CONTROL_PATH_DIR: controlDir,
      ANSIBLE_TIMEOUT: '15', ANSIBLE_FORKS: '20',
    };
    const keyArgs = o.keyFile ? ['--private-key', resolve(o.keyFile)] : [];
    const run: Session['run'] = (playbook, cwd, { quiet, extraArgs, ...extra } = {}) => runPlaybook({
      playbook, cwd, inventory: inv.args[1], extraArgs: [...inv.args.slice(2), ...keyArgs, ...(extraArgs ?? [])], tmpDir: tmp, extraVars: {}, env, logger: o.logger,
      run: (args, e, opts) => ansible.playbook(args, e, { ...opts, cwd }),
      onEvent: (e) => {
        const st = eventStatus(e);
        if (st) o.onStatus?.(st);
        if (!quiet && e.kind === 'result' && e.result) o.onTask?.({ ...e.result, host: shown(e.result.host) });
      },
      ...extra,
    });
    const readReleases: Session['readReleases'] = async (limit) => {
      writeFileSync(join(tmp, 'preflight.yml'), PREFLIGHT);
      const pre = await run(join(tmp, 'preflight.yml'), tmp, { quiet: true, extraArgs: limit ? limitArgs(limit) : [] });
      return { ...readFindings(pre.results), hosts: Object.keys(pre.stats).sort() };
    };
    const inventoryHosts = async () => {
      const out = await ansible.inventory(inv.args, tmp);
      let list: unknown;
      try { list = JSON.parse(out); } catch { throw new KilnError('ansible-inventory --list printed no JSON', { detail: out.slice(0, 2000) }); }
      return inventoryOrder(list as Parameters<typeof inventoryOrder>[0]);
    };
    return await fn({ tmp, shown, run, readReleases, inventoryHosts });
  } finally {
    await closeConnections(controlDir);
    rmSync(tmp, { recursive: true, force: true });
  }
}

export async function applyRelease(o: ApplyOptions): Promise<ApplyResult> {
  checkRelease(o.release);
  const r = o.release;
  const rolling = o.batch !== undefined || Boolean(o.resume);
  if (o.check && rolling) throw new KilnError('--check changes nothing and looks at every host at once: --batch and --resume do not go with it', { exitCode: 2 });
  if (o.maxFailures !== undefined && !rolling) throw new KilnError('--max-failures counts failed hosts across the batches of a rollout: pass --batch too', { exitCode: 2 });
  return withSession(o, async (s) => {
    const tree = join(s.tmp, 'tree');
    try {
      // A moved tag is refused before any host is contacted.
      await checkoutRelease(o, tree);
      const release = `${r.name}@${r.version}`;
      const t = loadTemplate(fileInTree(tree, r.template, 'kiln.yaml', release));
      fileInTree(tree, t.playbook, 'the playbook', release);
      // The health check is the release's own (its kiln.yaml, from its commit); check mode changes nothing to check.
      const health = o.check ? undefined : t.config.apply.health;
      if (health) healthPlaybook(health);

      // 1. The plan: one batch of every host, or the batches of a rollout (a resumed one keeps its own).
      const roll = rolling ? await rolloutPlan(o, s, release) : undefined;
      if (roll && !health) o.logger.warn(`${release} has no apply.health in its kiln.yaml: each batch is judged by its playbook run alone`);
      const plan: { index: number; hosts?: string[] }[] = roll ? pendingBatches(roll.record) : [{ index: 0, hosts: o.limit }];
      const batchCount = roll ? roll.record.batches.length : 1;

      // 2. Preflight: every host still to be done reachable, key accepted, running this image at a version we may replace.
      const pre = await s.readReleases(roll ? plan.flatMap((b) => b.hosts ?? []) : o.limit);
      const { current } = pre;
      const problems = preflightProblems(pre, r, o.allowDowngrade, s.shown);
      if (!pre.hosts.length) problems.push('the inventory has no hosts');
      if (problems.length) throw preflightError(problems, r);
      limitArgs(pre.hosts);

      const extraVars = { ...t.config.provision.vars, kiln_image_name: r.name, kiln_image_version: r.version, kiln_image_commit: r.commit, kiln_build: false };
      const outcomes = new Map<string, HostOutcome>();
      if (roll) {
        for (const [i, hosts] of roll.record.batches.entries()) {
          for (const id of hosts) if (DONE.has(roll.record.hosts[id]?.status ?? '')) outcomes.set(id, { host: s.shown(id), id, to: r.version, status: 'done before', changed: [], failed: [], batch: i + 1 });
        }
        writeRollout(roll.file, { ...roll.record, updated: new Date().toISOString() });
      }
      const reports: BatchReport[] = roll ? roll.record.batches.map((hosts, i) => ({ batch: i + 1, of: batchCount, hosts: hosts.map(s.shown), result: 'done before' as const, hostsFailed: [] })) : [];
      const maxFailures = roll ? parseMaxFailures(o.maxFailures, roll.order.length) : 0;
      let failures = 0;
      let stopped: ApplyResult['stopped'];

      for (const b of plan) {
        const report: BatchReport = { batch: b.index + 1, of: batchCount, hosts: (b.hosts ?? pre.hosts).map(s.shown), result: 'passed', hostsFailed: [] };
        if (roll) reports[b.index] = report;
        else reports.push(report);
        if (stopped) {
          report.result = 'not started';
          for (const id of b.hosts ?? []) outcomes.set(id, { host: s.shown(id), id, from: current.get(id)?.IMAGE_VERSION, to: r.version, status: 'not started', changed: [], failed: [], batch: b.index + 1 });
          continue;
        }
        o.onBatch?.({ kind: 'start', ...report });
        const got = await applyBatch(o, s, { playbook: t.playbook, dir: t.dir, extraVars, current, hosts: b.hosts, all: pre.hosts, batch: roll ? b.index + 1 : undefined });
        // 3. The health check, on the hosts that took the release.
        if (health) {
          const ok = got.filter((x) => x.status !== 'failed');
          if (ok.length) {
            o.onBatch?.({ kind: 'health', ...report, check: describeHealth(health) });
            writeFileSync(join(s.tmp, 'health.json'), healthPlaybook(health));
            const h = await s.run(join(s.tmp, 'health.json'), s.tmp, { quiet: true, extraVars, extraArgs: b.hosts ? limitArgs(b.hosts) : [] });
            const verdicts = healthVerdicts(health, ok.map((x) => x.id), h.results);
            for (const x of ok) {
              const why = verdicts.get(x.id);
              x.health = why ?? 'healthy';
              if (why) { x.status = 'unhealthy'; x.failed.push(`health: ${why}`); }
            }
          }
        }
        for (const x of got) outcomes.set(x.id, x);
        const bad = got.filter((x) => x.status === 'failed' || x.status === 'unhealthy');
        failures += bad.length;
        report.hostsFailed = bad.map((x) => x.host);
        if (bad.length) report.result = 'failed';
        if (roll) {
          const at = new Date().toISOString();
          for (const x of got) roll.record.hosts[x.id] = { status: x.status as RolloutHostStatus, batch: b.index + 1, at, ...(x.failed.length ? { why: x.failed[0] } : {}) };
        }
        if (roll && bad.length && failures > maxFailures) {
          const reason = `${failures} host(s) failed, more than --max-failures ${o.maxFailures ?? 0} allows: ${bad.map((x) => `${x.host} (${x.failed[0] ?? x.status})`).join(', ')}`;
          stopped = { batch: b.index + 1, reason };
          roll.record.stopped = { batch: b.index + 1, reason, at: new Date().toISOString() };
        }
        if (roll) writeRollout(roll.file, { ...roll.record, updated: new Date().toISOString() });
        o.onBatch?.({ kind: 'end', ...report, outcomes: got });
      }
      // A rollout every host of which is done needs no resuming.
      let resumable: string | undefined;
      if (roll) {
        if (roll.order.every((id) => DONE.has(roll.record.hosts[id]?.status ?? ''))) removeRollout(roll.file);
        else resumable = roll.file;
      }
      const order = roll ? roll.order : [...outcomes.keys()].sort();
      return { outcomes: order.map((id) => outcomes.get(id)).filter((x): x is HostOutcome => Boolean(x)), batches: reports, stopped, resumable, health: health ? describeHealth(health) : undefined };
    } finally {
      await removeWorktree(o.repoDir, tree);
    }
  });
}

/** The release's playbook on one batch (undefined: every host), then the stamp on the hosts that took it. */
async function applyBatch(o: ApplyOptions, s: Session, b: { playbook: string; dir: string; extraVars: Record<string, unknown>; current: Map<string, Record<string, string>>; hosts?: string[]; all: string[]; batch?: number }): Promise<HostOutcome[]> {
  const r = o.release;
  const limit = b.hosts ? limitArgs(b.hosts) : [];
  const main = await s.run(b.playbook, b.dir, { extraVars: b.extraVars, check: o.check, diff: o.diff, extraArgs: limit });
  const ids = b.hosts ?? [...new Set([...b.all, ...Object.keys(main.stats)])].sort();
  const outcomes: HostOutcome[] = ids.map((host) => {
    const to = r.version;
    const from = b.current.get(host)?.IMAGE_VERSION;
    const batch = b.batch !== undefined ? { batch: b.batch } : {};
    if (!main.stats[host]) return { host: s.shown(host), id: host, from, to, status: 'failed' as const, changed: [], failed: ["no play of the playbook targets this host (its hosts: patterns); --host hosts are in the group kiln_image, as at build time"], ...batch };
    const mine = main.results.filter((x) => x.host === host);
    const changed = mine.filter((x) => x.status === 'changed').map((x) => x.task);
    const failed = mine.filter((x) => x.status === 'failed' || x.status === 'unreachable').map((x) => `${x.task}: ${firstLine(x.msg ?? x.stderr)}`);
    const st = main.stats[host];
    const status: HostStatus = failed.length || st.failures || st.unreachable ? 'failed' : o.check ? (changed.length ? 'drift' : 'in sync') : changed.length ? 'upgraded' : 'unchanged';
    const diffs = o.diff ? mine.filter((x) => x.diff !== undefined && x.status === 'changed').map((x) => ({ ...x, host: s.shown(host) })) : undefined;
    return { host: s.shown(host), id: host, from, to, status, changed, failed, totals: st, diffs, ...batch };
  });

  // The stamp: the new version on the hosts that took the release (a failed host keeps its old one).
  const ok = outcomes.filter((x) => x.status !== 'failed').map((x) => x.id);
  if (!o.check && ok.length) {
    writeFileSync(join(s.tmp, 'stamp.yml'), stampPlaybook(r));
    const st = await s.run(join(s.tmp, 'stamp.yml'), s.tmp, { quiet: true, extraArgs: limitArgs(ok) });
    for (const x of st.results.filter((y) => y.status === 'failed' || y.status === 'unreachable')) {
      const h = outcomes.find((y) => y.id === x.host);
      if (h) { h.status = 'failed'; h.failed.push(`stamp: ${firstLine(x.msg)}`); }
    }
  }
  return outcomes;
}

/** The batches of a new rollout, or the record of a stopped one to resume (same release, same hosts). */
async function rolloutPlan(o: ApplyOptions, s: Session, release: string): Promise<{ order: string[]; file: string; record: RolloutRecord }> {
  const order = await s.inventoryHosts();
  if (!order.length) throw new KilnError('nothing was changed: the inventory has no hosts', { exitCode: 2 });
  limitArgs(order);
  const file = rolloutFile(release, order);
  const saved = readRollout(file);
  if (o.resume) {
    if (!saved) {
      throw new KilnError(`nothing to resume: no stopped rollout of ${release} to these ${order.length} host(s)`, {
        hint: 'a rollout is resumed with the same release and the same hosts (inventory names) it was started with; start one with --batch',
      });
    }
    if (saved.release !== release || saved.commit !== o.release.commit) throw new KilnError(`${file}: the stopped rollout was of ${saved.release} (commit ${saved.commit.slice(0, 12)}), not of ${release} (commit ${o.release.commit.slice(0, 12)})`, { hint: 'delete the file to start again' });
    if (o.batch !== undefined && o.batch !== saved.batch) throw new KilnError(`--batch ${o.batch}: the stopped rollout was started with --batch ${saved.batch}, and a resumed rollout keeps its batches`, { hint: 'drop --batch (or pass the same one) with --resume', exitCode: 2 });
    // The record's file name is the hash of exactly these names, so a mismatch is a record altered by hand.
    const planned = saved.batches.flat();
    const now = new Set(order);
    const extra = order.filter((h) => !planned.includes(h));
    const gone = planned.filter((h) => !now.has(h));
    if (extra.length || gone.length) throw new KilnError(`${file} does not plan the inventory's hosts (${[...extra.map((h) => `+${h}`), ...gone.map((h) => `-${h}`)].join(', ')})`, { hint: 'delete the file to start the rollout again' });
    o.logger.info(`resuming the rollout of ${release} stopped ${saved.stopped ? `at batch ${saved.stopped.batch} of ${saved.batches.length}` : 'before it ended'} (${saved.updated})`);
    return { order: saved.batches.flat(), file, record: { ...saved, stopped: undefined } };
  }
  if (saved) o.logger.warn(`a rollout of ${release} to these hosts stopped ${saved.stopped ? `at batch ${saved.stopped.batch} of ${saved.batches.length}` : 'before it ended'} (${saved.updated}): starting again from batch 1 (--resume would continue it)`);
  const record: RolloutRecord = { kind: 'kiln-rollout', format: 1, release, commit: o.release.commit, batch: o.batch ?? '100%', batches: planBatches(order, parseBatchSpec(o.batch ?? '100%')), hosts: {}, updated: new Date().toISOString() };
  return { order, file, record };
}

/** Ends the SSH master connections of this run (they would otherwise linger for ControlPersist). */
async function closeConnections(dir: string): Promise<void> {
  const socks = existsSync(dir) ? readdirSync(dir) : [];
  await Promise.all(socks.map((s) => endSshMaster(join(dir, s))));
}

/** Why a host running `current` (its /etc/release) must not get release r, or undefined. */
export function releaseProblem(current: Record<string, string>, r: Pick<ApplyRelease, 'name' | 'version'>, allowDowngrade: boolean): string | undefined {
  if (current.IMAGE_ID && current.IMAGE_ID !== r.name) return `runs image ${current.IMAGE_ID}, not ${r.name}`;
  const cmp = current.IMAGE_VERSION ? compareVersions(current.IMAGE_VERSION, r.version) : undefined;
  if (cmp !== undefined && cmp > 0 && !allowDowngrade) return `runs ${current.IMAGE_VERSION}, newer than ${r.version} (pass --allow-downgrade to go back)`;
  return undefined;
}

/** Each host's /etc/release (by inventory name), and why it could not be read, for each host where it could not. */
export interface HostReleases { current: Map<string, Record<string, string>>; unread: Map<string, string> }

/**
 * What the preflight's results say. A host's /etc/release is its own text: one that cannot be read is
 * that host's problem, and the other hosts are still read.
 */
export function readFindings(results: TaskResult[]): HostReleases {
  const current = new Map<string, Record<string, string>>();
  const unread = new Map<string, string>();
  for (const x of results) {
    if (x.status === 'unreachable') unread.set(x.host, `unreachable: ${sshReason(x.msg)}`);
    else if (x.status === 'failed') unread.set(x.host, `cannot read /etc/release (not a Kiln image?): ${firstLine(x.msg)}`);
    else if (x.status === 'ok' && x.content) {
      const release = parseKeyValues(Buffer.from(x.content, 'base64').toString('utf8'));
      if (release.problems.length) unread.set(x.host, `/etc/release is not one Kiln wrote: ${release.problems[0]}`);
      else current.set(x.host, release.values);
    }
  }
  return { current, unread };
}

/** Every reason release r must not be applied, a line per host: its release unread, or releaseProblem. */
export function preflightProblems(f: HostReleases, r: Pick<ApplyRelease, 'name' | 'version'>, allowDowngrade: boolean, shown: (id: string) => string = (id) => id): string[] {
  const lines = [...f.unread].map(([host, why]) => `${shown(host)}: ${why}`);
  for (const [host, rel] of f.current) {
    const p = releaseProblem(rel, r, allowDowngrade);
    if (p) lines.push(`${shown(host)}: ${p}`);
  }
  return lines;
}

/** ssh's own words, without Ansible's preamble ("Data could not be sent to remote host ... over ssh: "). */
export function sshReason(msg?: string): string {
  // A changed host key comes as ssh's banner of @ lines: its words, not the first line of @.
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED/.test(msg ?? '')) return 'REMOTE HOST IDENTIFICATION HAS CHANGED: Host key verification failed.';
  const lines = (msg ?? '').split('\n').map((l) => l.trim()).filter((l) => l && !/^@+$/.test(l));
  return (lines[0] ?? '').replace(/^.*?(?:reached over ssh|Failed to connect to the host via ssh): /, '') || 'no answer';
}

/** The refusal when the preflight found problems: exit 4 when every one is a host not reached (connection, login, host key). */
export function preflightError(problems: string[], r: Pick<ApplyRelease, 'name' | 'version'>): KilnError {
  const exitCode = problems.every((p) => /^\S+: unreachable: /.test(p)) ? APPLY_EXIT.unreachable : APPLY_EXIT.failed;
  return new KilnError(`nothing was changed: ${problems.length} problem(s) found before applying ${r.name}@${r.version}`, { detail: problems.join('\n'), hint: preflightHint(problems), exitCode });
}

function preflightHint(problems: string[]): string | undefined {
  if (problems.some((p) => /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No [A-Z0-9-]+ host key is known/.test(p))) {
    return 'the host\'s SSH key is not the one known for it (--known-hosts, else ~/.ssh/known_hosts). A machine seen for the first time: pass --accept-new to pin its key. One re-created on purpose: remove its old key (ssh-keygen -R \'[address]:port\' -f <file>). Otherwise something else answers at that address: do not go on';
  }
  if (problems.some((p) => /Permission denied/.test(p))) return 'the SSH key was refused: pass the right one with --key (and the user as user@address)';
  if (problems.some((p) => /unreachable/.test(p))) return 'check the address and port, and that sshd runs on the host';
  if (problems.some((p) => /newer than/.test(p))) return 'apply a newer release, or pass --allow-downgrade if going back is intended';
  return undefined;
}

export async function repoRoot(dir: string): Promise<string> {
  return output('git', ['-C', dir, 'rev-parse', '--show-toplevel'], { hint: 'run kiln apply inside the image repository' });
}
