/**
 * Rolling upgrades without SSH: `applyRelease` runs against a fake Ansible (the AnsibleDriver seam) that
 * answers as a fleet would: each host has a version in /etc/release, may fail the playbook, may be
 * unhealthy. The fake records which playbook ran on which hosts, so the tests prove what a rollout
 * contacted and what it left alone. (test/e2e/apply.test.ts runs the same rollout on a booted VM.)
 * Plus the pure parts: batch sizes with Ansible's serial semantics, --max-failures, inventory order,
 * the health play and the reading of its results, and the rollout record.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { applyExitCode, applyRelease, type AnsibleDriver, type ApplyOptions, type ApplyResult } from '../../src/apply/index.js';
import { COMMAND_TASK, HTTP_TASK, describeHealth, healthPlaybook, healthVerdicts, type HealthConfig } from '../../src/apply/health.js';
import { inventoryOrder, limitArgs, parseBatchSpec, parseMaxFailures, pendingBatches, planBatches, readRollout, rolloutFile } from '../../src/apply/rollout.js';
import { rolloutLines } from '../../src/apply/report.js';
import { KilnError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import type { TaskResult } from '../../src/provision/results.js';

const EXAMPLE = resolve(new URL('../../../examples/debian-web', import.meta.url).pathname);
const made: string[] = [];
let stateDir: string;
const savedState = process.env.KILN_STATE_DIR;
before(() => {
  stateDir = mkdtempSync(join(tmpdir(), 'kiln-rollout-state-'));
  made.push(stateDir);
  process.env.KILN_STATE_DIR = stateDir;
});
after(() => {
  if (savedState === undefined) delete process.env.KILN_STATE_DIR;
  else process.env.KILN_STATE_DIR = savedState;
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

const HEALTH = 'apply:\n  health:\n    http: { url: "http://127.0.0.1/", body: "{{ kiln_image_version }}" }\n    command: systemctl is-active --quiet nginx\n    timeout: 10s\n    interval: 2s\n';

/** The example's kiln.yaml and playbook (with the health check), committed and tagged release-0.2.0. */
function repo(kilnYamlExtra = HEALTH): { dir: string; commit: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-rollout-'));
  made.push(dir);
  const g = (...a: string[]) => execFileSync('git', ['-C', dir, '-c', 'user.email=a@b', '-c', 'user.name=n', ...a], { encoding: 'utf8' }).trim();
  g('init', '-q');
  for (const f of ['kiln.yaml', 'playbook.yml']) copyFileSync(join(EXAMPLE, f), join(dir, f));
  writeFileSync(join(dir, 'kiln.yaml'), readFileSync(join(dir, 'kiln.yaml'), 'utf8') + kilnYamlExtra);
  g('add', '-A');
  g('commit', '-qm', 'one');
  g('tag', 'release-0.2.0');
  return { dir, commit: g('rev-parse', 'HEAD') };
}

interface FakeHost { version: string; unhealthy?: boolean; failPlaybook?: boolean }

/**
 * A fleet behind a fake ansible-playbook: it reads the playbook, --limit and the extra variables as the
 * real one would and prints ansible.posix.jsonl events. Every run is recorded as [playbook, hosts].
 */
class FakeFleet implements AnsibleDriver {
  readonly calls: [string, string[]][] = [];
  /** Throws (as an interrupted run) when this playbook is about to run on this host. */
  interruptAt?: { playbook: string; host: string };
  constructor(readonly hosts: Map<string, FakeHost>, readonly groups: Record<string, { hosts?: string[]; children?: string[] }>) {}

  async inventory(): Promise<string> {
    return JSON.stringify({ _meta: { hostvars: {} }, ...this.groups });
  }

  async playbook(args: string[], _env: Record<string, string>, opts: { onStdoutLine?: (l: string) => void }) {
    const file = args[args.length - 1];
    const name = basename(file);
    const limitAt = args.lastIndexOf('--limit');
    const targets = limitAt >= 0 ? args[limitAt + 1].split(',') : [...this.hosts.keys()];
    for (const h of targets) assert.ok(this.hosts.has(h), `--limit names ${h}, which is not in the inventory`);
    this.calls.push([name, targets]);
    if (this.interruptAt && this.interruptAt.playbook === name && targets.includes(this.interruptAt.host)) throw new KilnError('ansible-playbook was killed by SIGINT');
    const varsFile = args[args.indexOf('-e') + 1].slice(1);
    const vars = JSON.parse(readFileSync(varsFile, 'utf8')) as { kiln_image_version?: string };
    const check = args.includes('--check');
    const lines: string[] = [];
    const stats: Record<string, Record<string, number>> = {};
    const result = (host: string, task: string, event: string, r: Record<string, unknown>) => {
      lines.push(JSON.stringify({ _event: event, task: { name: task }, hosts: { [host]: r } }));
      const s = (stats[host] ??= { ok: 0, changed: 0, failures: 0, unreachable: 0, skipped: 0, rescued: 0, ignored: 0 });
      if (event === 'v2_runner_on_failed') s.failures++;
      else { s.ok++; if (r.changed) s.changed++; }
    };
    for (const host of targets) {
      const h = this.hosts.get(host)!;
      if (name === 'preflight.yml') {
        result(host, 'read /etc/release', 'v2_runner_on_ok', { content: Buffer.from(`IMAGE_ID=web\nIMAGE_VERSION=${h.version}\n`).toString('base64') });
      } else if (name === 'stamp.yml') {
        const v = /IMAGE_VERSION=([^\\"\n]+)/.exec(readFileSync(file, 'utf8'))![1];
        h.version = v;
        result(host, 'write /etc/release', 'v2_runner_on_ok', { changed: true });
      } else if (name === 'health.json') {
        const play = JSON.parse(readFileSync(file, 'utf8')) as { tasks: { name: string }[] }[];
        for (const t of play[0].tasks) {
          if (h.unhealthy && t.name === HTTP_TASK) result(host, t.name, 'v2_runner_on_failed', { msg: 'Status code was 503 and not [200]: HTTP Error 503: Service Unavailable' });
          else result(host, t.name, 'v2_runner_on_ok', {});
        }
      } else {
        if (h.failPlaybook) { result(host, 'web : Install nginx', 'v2_runner_on_failed', { msg: 'No package matching nginx' }); continue; }
        result(host, 'web : Install nginx', 'v2_runner_on_ok', { changed: !check && h.version !== vars.kiln_image_version });
      }
    }
    lines.push(JSON.stringify({ _event: 'v2_playbook_on_stats', stats }));
    for (const l of lines) opts.onStdoutLine?.(l);
    return { code: Object.values(stats).some((s) => s.failures) ? 2 : 0, signal: null, stdout: lines.join('\n'), stderr: '' };
  }

  /** The hosts a playbook other than the preflight ran on, in order. */
  touched(): string[] {
    return this.calls.filter(([n]) => n !== 'preflight.yml').flatMap(([, h]) => h);
  }
}

/** A canary group written first, then the web group. */
function fleet(extra: Record<string, Partial<FakeHost>> = {}): FakeFleet {
  const names = ['c1', 'w1', 'w2', 'w3'];
  return new FakeFleet(new Map(names.map((n) => [n, { version: 'release-0.1.0', ...extra[n] }])), {
    all: { children: ['ungrouped', 'fleet'] },
    fleet: { children: ['canary', 'web'] },
    canary: { hosts: ['c1'] },
    web: { hosts: ['w1', 'w2', 'w3'] },
  });
}

function options(dir: string, commit: string, ansible: AnsibleDriver, extra: Partial<ApplyOptions> = {}): ApplyOptions {
  const inv = join(dir, 'inventory.ini');
  writeFileSync(inv, '# the fake reads its own inventory\n');
  return {
    release: { name: 'web', version: 'release-0.2.0', commit, tag: 'release-0.2.0', template: 'kiln.yaml', sourceDateEpoch: 0 },
    repoDir: dir, hosts: [], inventory: inv, check: false, diff: false, allowDowngrade: false, insecureHostKeys: true, logger: silentLogger, ansible, ...extra,
  };
}

const statuses = (r: ApplyResult) => r.outcomes.map((o) => [o.id, o.status, o.batch]);

describe('a rolling upgrade', () => {
  test('--batch 1 with the second batch unhealthy: stops there, the later batches untouched; --resume finishes without contacting the first', async () => {
    const { dir, commit } = repo();
    const f = fleet({ w1: { unhealthy: true } });
    const batches: string[] = [];
    const r = await applyRelease(options(dir, commit, f, { batch: '1', onBatch: (e) => batches.push(`${e.kind} ${e.batch}/${e.of}`) }));
    assert.deepEqual(statuses(r), [['c1', 'upgraded', 1], ['w1', 'unhealthy', 2], ['w2', 'not started', 3], ['w3', 'not started', 4]]);
    assert.equal(r.outcomes[0].health, 'healthy');
    assert.deepEqual(r.outcomes[1].failed, ['health: GET http://127.0.0.1/: Status code was 503 and not [200]: HTTP Error 503: Service Unavailable']);
    assert.deepEqual(r.batches.map((b) => b.result), ['passed', 'failed', 'not started', 'not started']);
    assert.deepEqual(r.stopped, { batch: 2, reason: '1 host(s) failed, more than --max-failures 0 allows: w1 (health: GET http://127.0.0.1/: Status code was 503 and not [200]: HTTP Error 503: Service Unavailable)' });
    assert.equal(applyExitCode(r.outcomes), 1);
    assert.deepEqual(batches, ['start 1/4', 'health 1/4', 'end 1/4', 'start 2/4', 'health 2/4', 'end 2/4']);
    // The preflight read every host; nothing else reached w2 or w3.
    assert.deepEqual(f.calls[0], ['preflight.yml', ['c1', 'w1', 'w2', 'w3']]);
    assert.deepEqual(f.calls.slice(1), [
      ['playbook.yml', ['c1']], ['stamp.yml', ['c1']], ['health.json', ['c1']],
      ['playbook.yml', ['w1']], ['stamp.yml', ['w1']], ['health.json', ['w1']],
    ]);
    assert.deepEqual([...f.hosts.values()].map((h) => h.version), ['release-0.2.0', 'release-0.2.0', 'release-0.1.0', 'release-0.1.0']);
    // The record for --resume, and the way to go on.
    assert.ok(r.resumable && existsSync(r.resumable));
    assert.equal(readRollout(r.resumable)?.stopped?.batch, 2);
    const lines = rolloutLines(r, { batch: '1', resumeCommand: 'kiln apply web@release-0.2.0 -i inv --resume' });
    assert.deepEqual(lines.slice(0, 5), ['batches (4, --batch 1):', '  1/4  passed       c1', '  2/4  failed       w1   (failed: w1)', '  3/4  not started  w2', '  4/4  not started  w3']);
    assert.match(lines.join('\n'), /rollout stopped after batch 2\/4: .*\n  not contacted after the preflight: w2, w3\n  to go on once fixed: kiln apply web@release-0\.2\.0 -i inv --resume \(applies the hosts not done: w1, w2, w3;/);

    // Fixed: --resume retries w1, then w2 and w3, and does not contact c1 at all.
    f.hosts.get('w1')!.unhealthy = false;
    f.calls.length = 0;
    const again = await applyRelease(options(dir, commit, f, { resume: true }));
    assert.deepEqual(statuses(again), [['c1', 'done before', 1], ['w1', 'unchanged', 2], ['w2', 'upgraded', 3], ['w3', 'upgraded', 4]]);
    assert.deepEqual(f.calls[0], ['preflight.yml', ['w1', 'w2', 'w3']]);
    assert.ok(!f.calls.some(([, h]) => h.includes('c1')), 'c1 was done: not contacted');
    assert.deepEqual(f.touched(), ['w1', 'w1', 'w1', 'w2', 'w2', 'w2', 'w3', 'w3', 'w3']);
    assert.equal(applyExitCode(again.outcomes), 0);
    assert.equal(again.resumable, undefined);
    assert.ok(!existsSync(r.resumable), 'a finished rollout leaves no record');
    await assert.rejects(applyRelease(options(dir, commit, f, { resume: true })), /nothing to resume: no stopped rollout of web@release-0\.2\.0 to these 4 host\(s\)/);
  });

  test('--max-failures tolerates that many failed hosts over the whole rollout; the next one stops it', async () => {
    const { dir, commit } = repo();
    const f = fleet({ c1: { failPlaybook: true }, w2: { unhealthy: true } });
    const r = await applyRelease(options(dir, commit, f, { batch: '1,50%', maxFailures: '1' }));
    // 1, then 50% of 4 = 2 hosts, repeated: [c1] [w1 w2] [w3].
    assert.deepEqual(r.batches.map((b) => b.hosts), [['c1'], ['w1', 'w2'], ['w3']]);
    assert.deepEqual(statuses(r), [['c1', 'failed', 1], ['w1', 'upgraded', 2], ['w2', 'unhealthy', 2], ['w3', 'not started', 3]]);
    assert.match(r.stopped?.reason ?? '', /^2 host\(s\) failed, more than --max-failures 1 allows: w2 /);
    // A host whose playbook failed is not stamped, and not health-checked.
    assert.equal(f.hosts.get('c1')!.version, 'release-0.1.0');
    assert.deepEqual(f.calls.filter(([n]) => n === 'health.json'), [['health.json', ['w1', 'w2']]]);
    assert.deepEqual(r.outcomes[0].failed, ['web : Install nginx: No package matching nginx']);
    // Resuming retries the two failed hosts and the one not started; w1 is done.
    f.hosts.get('c1')!.failPlaybook = false;
    f.hosts.get('w2')!.unhealthy = false;
    f.calls.length = 0;
    const again = await applyRelease(options(dir, commit, f, { resume: true, maxFailures: '1' }));
    assert.deepEqual(statuses(again), [['c1', 'upgraded', 1], ['w1', 'done before', 2], ['w2', 'unchanged', 2], ['w3', 'upgraded', 3]]);
    assert.deepEqual(f.calls.filter(([n]) => n === 'playbook.yml').map(([, h]) => h), [['c1'], ['w2'], ['w3']]);
  });

  test('an interrupted rollout resumes at the batch it was in', async () => {
    const { dir, commit } = repo();
    const f = fleet();
    f.interruptAt = { playbook: 'playbook.yml', host: 'w2' };
    await assert.rejects(applyRelease(options(dir, commit, f, { batch: '2' })), /killed by SIGINT/);
    const file = rolloutFile('web@release-0.2.0', ['c1', 'w1', 'w2', 'w3']);
    const rec = readRollout(file)!;
    assert.deepEqual(Object.keys(rec.hosts), ['c1', 'w1'], 'the first batch is recorded, the interrupted one is not');
    assert.deepEqual(pendingBatches(rec), [{ index: 1, hosts: ['w2', 'w3'] }]);
    f.interruptAt = undefined;
    f.calls.length = 0;
    const r = await applyRelease(options(dir, commit, f, { resume: true }));
    assert.deepEqual(statuses(r), [['c1', 'done before', 1], ['w1', 'done before', 1], ['w2', 'upgraded', 2], ['w3', 'upgraded', 2]]);
    assert.deepEqual(f.calls[0], ['preflight.yml', ['w2', 'w3']]);
    assert.ok(!existsSync(file));
  });

  test('without --batch every host is one batch, still health-checked; an unhealthy host fails the run (exit 1)', async () => {
    const { dir, commit } = repo();
    const f = fleet({ w3: { unhealthy: true } });
    const r = await applyRelease(options(dir, commit, f));
    assert.deepEqual(r.outcomes.map((o) => [o.id, o.status]), [['c1', 'upgraded'], ['w1', 'upgraded'], ['w2', 'upgraded'], ['w3', 'unhealthy']]);
    assert.deepEqual(f.calls.map(([n, h]) => [n, h.length]), [['preflight.yml', 4], ['playbook.yml', 4], ['stamp.yml', 4], ['health.json', 4]]);
    assert.equal(r.stopped, undefined);
    assert.equal(r.resumable, undefined);
    assert.equal(applyExitCode(r.outcomes), 1);
    assert.equal(readdirSync(stateDir).includes('rollouts') ? readdirSync(join(stateDir, 'rollouts')).length : 0, 0, 'no rollout record without --batch');
  });

  test('a release without apply.health runs no check', async () => {
    const { dir, commit } = repo('');
    const f = fleet({ w1: { unhealthy: true } });
    const warnings: string[] = [];
    const r = await applyRelease(options(dir, commit, f, { batch: '2', logger: { ...silentLogger, warn: (m) => warnings.push(m) } }));
    assert.ok(r.outcomes.every((o) => o.status === 'upgraded' && o.health === undefined));
    assert.ok(!f.calls.some(([n]) => n === 'health.json'));
    assert.deepEqual(warnings, ['web@release-0.2.0 has no apply.health in its kiln.yaml: each batch is judged by its playbook run alone']);
  });

  test('refused before any host changes: --check with --batch, --max-failures alone, another --batch on resume, a host name Ansible reads as a pattern', async () => {
    const { dir, commit } = repo();
    const f = fleet();
    const usage = async (o: Partial<ApplyOptions>, re: RegExp) => {
      const e = await applyRelease(options(dir, commit, f, o)).then(() => undefined, (x: unknown) => x);
      assert.ok(e instanceof KilnError && re.test(e.message), String(e));
      assert.equal(e.exitCode, 2);
    };
    await usage({ check: true, batch: '1' }, /--check changes nothing/);
    await usage({ maxFailures: '1' }, /--max-failures counts failed hosts across the batches/);
    await usage({ batch: '0' }, /--batch "0": "0" is not a batch size/);
    f.hosts.get('w1')!.unhealthy = true;
    await applyRelease(options(dir, commit, f, { batch: '1' }));
    await usage({ resume: true, batch: '2' }, /--batch 2: the stopped rollout was started with --batch 1/);
    const odd = new FakeFleet(new Map([['web[1]', { version: 'release-0.1.0' }]]), { all: { children: ['ungrouped'] }, ungrouped: { hosts: ['web[1]'] } });
    await usage({ ansible: odd, batch: "1" }, /inventory host name "web\[1\]" cannot be limited to on its own/);
    assert.deepEqual(odd.calls, [], 'nothing ran');
  });
});

describe('batches, failures and order', () => {
  test('batch sizes follow Ansible\'s serial: a percentage of all hosts rounded down, at least one; the last size repeats', () => {
    const ten = Array.from({ length: 10 }, (_, i) => `h${i}`);
    assert.deepEqual(planBatches(ten, parseBatchSpec('1,25%,100%')).map((b) => b.length), [1, 2, 7]);
    assert.deepEqual(planBatches(ten, parseBatchSpec('30%')).map((b) => b.length), [3, 3, 3, 1]);
    assert.deepEqual(planBatches(ten, parseBatchSpec('5%')).map((b) => b.length), Array(10).fill(1));
    assert.deepEqual(planBatches(ten, parseBatchSpec('4')), [ten.slice(0, 4), ten.slice(4, 8), ten.slice(8)]);
    assert.deepEqual(planBatches(['a'], parseBatchSpec('50')), [['a']]);
    for (const bad of ['0', '101%', '-1', '1,,2', 'ten', '']) assert.throws(() => parseBatchSpec(bad), /is not a batch size/, bad);
  });

  test('--max-failures is a number of hosts or a percentage of all of them, rounded down', () => {
    assert.equal(parseMaxFailures(undefined, 10), 0);
    assert.equal(parseMaxFailures('2', 10), 2);
    assert.equal(parseMaxFailures('25%', 10), 2);
    assert.equal(parseMaxFailures('5%', 10), 0);
    assert.throws(() => parseMaxFailures('x', 10), /expected a number of hosts or a percentage/);
    assert.throws(() => parseMaxFailures('200%', 10), /expected a number/);
  });

  test('hosts are taken in the order the inventory lists them (ansible-inventory --list, groups depth first)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-rollout-inv-'));
    made.push(dir);
    const inv = join(dir, 'hosts.ini');
    writeFileSync(inv, '[canary]\nweb1 ansible_host=192.0.2.1\n[web]\nweb3\nweb2\nweb1\n[fleet:children]\ncanary\nweb\n[db]\ndb1\n');
    const list = JSON.parse(execFileSync('ansible-inventory', ['-i', inv, '--list'], { encoding: 'utf8', cwd: dir, env: { ...process.env, ANSIBLE_LOCAL_TEMP: join(dir, 't') } }));
    assert.deepEqual(inventoryOrder(list), ['web1', 'web3', 'web2', 'db1']);
  });

  test('a --limit names exactly the hosts: names with pattern characters are refused', () => {
    assert.deepEqual(limitArgs(['web-1', 'db.example.org', 'h_2']), ['--limit', 'web-1,db.example.org,h_2']);
    for (const bad of ['a:b', 'web*', '!web', 'a,b', '~x', 'w[1]', 'fd00::5', '&web']) assert.throws(() => limitArgs([bad]), /cannot be limited to on its own/, bad);
  });

  test('a rollout record that is not Kiln\'s is refused with its path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-rollout-rec-'));
    made.push(dir);
    const f = join(dir, 'r.json');
    writeFileSync(f, '{"kind":"kiln-rollout","format":1}');
    assert.throws(() => readRollout(f), (e: unknown) => e instanceof KilnError && e.message === `${f}: not a rollout record Kiln wrote` && /delete it/.test(e.hint ?? ''));
    writeFileSync(f, '{');
    assert.throws(() => readRollout(f), /not a rollout record Kiln wrote \(/);
    assert.equal(readRollout(join(dir, 'none.json')), undefined);
    assert.notEqual(rolloutFile('web@release-0.2.0', ['a', 'b']), rolloutFile('web@release-0.2.0', ['a']));
    assert.equal(rolloutFile('web@release-0.2.0', ['a', 'b']), rolloutFile('web@release-0.2.0', ['b', 'a']));
  });
});

describe('the health check', () => {
  const cfg: HealthConfig = { http: { url: 'http://127.0.0.1:{{ port }}/', status: [200, 204], body: 'v{{ kiln_image_version }}', from: 'host', validate_certs: true }, command: "test -e /run/ok && echo 'x'", timeout: '1m', interval: '10s' };

  test('is one play of JSON: each check a task retried every interval until the timeout, nothing spliced into YAML', () => {
    const [play] = JSON.parse(healthPlaybook(cfg)) as { hosts: string; become: boolean; tasks: Record<string, unknown>[] }[];
    assert.equal(play.hosts, 'all');
    const [http, cmd] = play.tasks;
    assert.equal(http.name, HTTP_TASK);
    assert.deepEqual(http['ansible.builtin.uri'], { url: 'http://127.0.0.1:{{ port }}/', status_code: [200, 204], timeout: 10, follow_redirects: 'none', validate_certs: true, return_content: true });
    assert.deepEqual([http.retries, http.delay], [6, 10]);
    assert.deepEqual(http.vars, { kiln_health_body: 'v{{ kiln_image_version }}' });
    assert.match(String(http.until), /kiln_health_http is succeeded and \(kiln_health_http\.content is search\(kiln_health_body\)\)/);
    assert.equal(http.delegate_to, undefined);
    assert.equal(cmd.name, COMMAND_TASK);
    assert.equal(cmd['ansible.builtin.shell'], "test -e /run/ok && echo 'x'");
    const [ctl] = JSON.parse(healthPlaybook({ ...cfg, command: undefined, http: { ...cfg.http!, from: 'controller', body: undefined } }))[0].tasks as Record<string, unknown>[];
    assert.deepEqual([ctl.delegate_to, ctl.become, ctl.vars], ['localhost', false, undefined]);
    assert.throws(() => healthPlaybook({ timeout: '1m', interval: '5s' }), /needs http, command, or both/);
    assert.equal(describeHealth(cfg), "GET http://127.0.0.1:{{ port }}/ -> 200|204, body ~ /v{{ kiln_image_version }}/; command: test -e /run/ok && echo 'x' (within 1m, every 10s)");
  });

  test('a host is healthy only when every check ran and passed on it', () => {
    const r = (host: string, task: string, status: TaskResult['status'], msg?: string, stderr?: string): TaskResult => ({ play: 'p', task, host, action: 'x', status, ...(msg ? { msg } : {}), ...(stderr ? { stderr } : {}) });
    const v = healthVerdicts(cfg, ['a', 'b', 'c', 'd', 'e'], [
      r('a', HTTP_TASK, 'ok'), r('a', COMMAND_TASK, 'ok'),
      { ...r('b', HTTP_TASK, 'failed', 'OK (20 bytes)'), url: 'http://127.0.0.1:8080/' }, r('b', COMMAND_TASK, 'ok'),
      r('c', HTTP_TASK, 'ok'), r('c', COMMAND_TASK, 'failed', 'non-zero return code', 'test: missing\n'),
      r('d', HTTP_TASK, 'unreachable', 'Failed to connect'),
      r('e', HTTP_TASK, 'ok'),
    ]);
    assert.deepEqual([...v], [
      ['a', undefined],
      ['b', 'GET http://127.0.0.1:8080/: the response does not match /v{{ kiln_image_version }}/'],
      ['c', 'command failed: test: missing'],
      ['d', 'unreachable: Failed to connect'],
      ['e', 'command did not run'],
    ]);
  });
});

test('a rollout record altered by hand (its batches no longer the inventory\'s hosts) is refused on --resume, changing nothing', async () => {
  const { dir, commit } = repo();
  const f = fleet({ w1: { unhealthy: true } });
  const r = await applyRelease(options(dir, commit, f, { batch: '1' }));
  const rec = readRollout(r.resumable!)!;
  writeFileSync(r.resumable!, JSON.stringify({ ...rec, batches: [['c1'], ['w1'], ['w2'], ['zz']] }));
  f.calls.length = 0;
  await assert.rejects(applyRelease(options(dir, commit, f, { resume: true })), (e: unknown) => e instanceof KilnError && /does not plan the inventory's hosts \(\+w3, -zz\)/.test(e.message));
  assert.deepEqual(f.calls, [], 'no host was contacted');
});
