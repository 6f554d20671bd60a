/** What `kiln apply` refuses before contacting any host (no SSH, no VM needed). */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, test } from 'node:test';
import { parseHost } from '../../src/apply/hosts.js';
import { applyRelease, type ApplyOptions } from '../../src/apply/index.js';
import { KilnError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { freePort } from '../../src/vm/qemu.js';

const EXAMPLE = resolve(new URL('../../../examples/debian-web', import.meta.url).pathname);

const made: string[] = [];
after(() => { for (const d of made) rmSync(d, { recursive: true, force: true }); });

function repo(edit?: (dir: string) => void): { dir: string; commit: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-apply-u-'));
  made.push(dir);
  const g = (...a: string[]) => execFileSync('git', ['-C', dir, '-c', 'user.email=a@b', '-c', 'user.name=n', ...a], { encoding: 'utf8' }).trim();
  g('init', '-q');
  // The example's kiln.yaml and playbook: the release's template is loaded before hosts are contacted.
  for (const f of ['kiln.yaml', 'playbook.yml']) copyFileSync(join(EXAMPLE, f), join(dir, f));
  edit?.(dir);
  g('add', '-A');
  g('commit', '-qm', 'one');
  g('tag', 'release-0.1.0');
  return { dir, commit: g('rev-parse', 'HEAD') };
}

function options(dir: string, commit: string, extra: Partial<ApplyOptions> = {}): ApplyOptions {
  return {
    release: { name: 'web', version: 'release-0.1.0', commit, tag: 'release-0.1.0', template: 'kiln.yaml', sourceDateEpoch: 0 },
    repoDir: dir, hosts: [parseHost('kiln@127.0.0.1:1')], check: false, diff: false, allowDowngrade: false, insecureHostKeys: true, logger: silentLogger, ...extra,
  };
}

test('a tag that moved to another commit is refused before any host is contacted', async () => {
  const { dir, commit } = repo();
  execFileSync('git', ['-C', dir, '-c', 'user.email=a@b', '-c', 'user.name=n', 'commit', '-q', '--allow-empty', '-m', 'two']);
  execFileSync('git', ['-C', dir, 'tag', '-f', 'release-0.1.0'], { stdio: 'ignore' });
  let contacted = false;
  await assert.rejects(applyRelease(options(dir, commit, { onStatus: () => { contacted = true; } })),
    /nothing was changed: tag release-0\.1\.0 now points to [0-9a-f]{12}, but release web@release-0\.1\.0 was built from [0-9a-f]{12}/);
  assert.equal(contacted, false);
  assert.equal(execFileSync('git', ['-C', dir, 'worktree', 'list'], { encoding: 'utf8' }).trim().split('\n').length, 1, 'no worktree is left');
});

test('a release whose commit is not in the repository is refused', async () => {
  const { dir } = repo();
  await assert.rejects(applyRelease(options(dir, '0123456789abcdef0123456789abcdef01234567')), /commit 0123456789ab of web@release-0\.1\.0 is not in the repository/);
});

test('no hosts, or a key file that does not exist, are usage errors', async () => {
  const { dir, commit } = repo();
  await assert.rejects(applyRelease(options(dir, commit, { hosts: [] })), /no hosts: pass --host/);
  await assert.rejects(applyRelease(options(dir, commit, { keyFile: join(dir, 'nope') })), /key file not found/);
});

test('hosts of an --inventory file go through the same preflight as --host (closed ports: nothing runs)', async () => {
  const { dir, commit } = repo();
  const closed = await freePort();
  const inv = join(dir, 'hosts.ini');
  writeFileSync(inv, `[web]\nweb-1 ansible_host=127.0.0.1 ansible_port=${closed} ansible_user=kiln\n`);
  const err = await applyRelease(options(dir, commit, { inventory: inv })).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof KilnError, String(err));
  assert.match(err.message, /^nothing was changed: 2 problem\(s\) found before applying web@release-0\.1\.0$/);
  assert.match(err.detail ?? '', new RegExp(`^web-1: unreachable: ssh: connect to host 127\\.0\\.0\\.1 port ${closed}: Connection refused$`, 'm'));
  assert.match(err.detail ?? '', /^127\.0\.0\.1:1: unreachable: ssh: connect to host 127\.0\.0\.1 port 1: Connection refused$/m);
  assert.equal(err.hint, 'check the address and port, and that sshd runs on the host');
});

/** Runs applyRelease expecting a refusal before any host is contacted and with no worktree left; returns the error. */
async function refusedBeforeHosts(o: ApplyOptions, dir: string): Promise<KilnError> {
  let contacted = false;
  const err = await applyRelease({ ...o, onStatus: () => { contacted = true; } }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof KilnError, String(err));
  assert.equal(contacted, false, 'no host was contacted');
  assert.equal(execFileSync('git', ['-C', dir, 'worktree', 'list'], { encoding: 'utf8' }).trim().split('\n').length, 1, 'no worktree is left');
  return err;
}

test('a record whose commit is not a full hex commit id is refused, naming the release', async () => {
  const { dir, commit } = repo();
  for (const bad of [commit.slice(0, 12), 'HEAD', 'release-0.1.0', '--orphan', commit.toUpperCase(), `${commit}^`, '']) {
    const err = await refusedBeforeHosts(options(dir, bad), dir);
    assert.match(err.message, /^release web@release-0\.1\.0 records commit ".*", which is not a full git commit id \(40 or 64 lower-case hex digits\)$/, bad);
  }
});

test('a record whose kiln.yaml path leaves the repository is refused before anything is checked out', async () => {
  const { dir, commit } = repo();
  for (const bad of ['../kiln.yaml', '/etc/kiln.yaml', 'images/../../kiln.yaml', './kiln.yaml', 'images//kiln.yaml', '', '.']) {
    const o = options(dir, commit);
    const err = await refusedBeforeHosts({ ...o, release: { ...o.release, template: bad } }, dir);
    assert.match(err.message, /^release web@release-0\.1\.0 records its kiln\.yaml as ".*", which is not a relative path inside the repository$/, bad);
  }
});

test('a kiln.yaml or playbook that is a symlink out of the worktree is refused', async () => {
  // Outside the repository: a template that would load (its playbook beside it).
  const outside = mkdtempSync(join(tmpdir(), 'kiln-apply-outside-'));
  made.push(outside);
  writeFileSync(join(outside, 'kiln.yaml'), readFileSync(join(EXAMPLE, 'kiln.yaml')));
  copyFileSync(join(EXAMPLE, 'playbook.yml'), join(outside, 'playbook.yml'));
  const linkedTemplate = repo((d) => { mkdirSync(join(d, 'images')); symlinkSync(join(outside, 'kiln.yaml'), join(d, 'images/kiln.yaml')); });
  const o = options(linkedTemplate.dir, linkedTemplate.commit);
  const err = await refusedBeforeHosts({ ...o, release: { ...o.release, template: 'images/kiln.yaml' } }, linkedTemplate.dir);
  assert.match(err.message, /^nothing was changed: release web@release-0\.1\.0: kiln\.yaml at images\/kiln\.yaml resolves to .*, outside the release's commit$/);

  const linkedPlaybook = repo((d) => { rmSync(join(d, 'playbook.yml')); symlinkSync(join(outside, 'playbook.yml'), join(d, 'playbook.yml')); });
  const err2 = await refusedBeforeHosts(options(linkedPlaybook.dir, linkedPlaybook.commit), linkedPlaybook.dir);
  assert.match(err2.message, /^nothing was changed: release web@release-0\.1\.0: the playbook at playbook\.yml resolves to .*, outside the release's commit$/);
});

test('a record without a tag is checked against the tag named by its version: missing or moved, it is refused', async () => {
  const untagged = (o: ApplyOptions): ApplyOptions => ({ ...o, release: { ...o.release, tag: undefined } });
  const { dir, commit } = repo();
  execFileSync('git', ['-C', dir, 'tag', '-d', 'release-0.1.0'], { stdio: 'ignore' });
  const missing = await refusedBeforeHosts(untagged(options(dir, commit)), dir);
  assert.match(missing.message, /^nothing was changed: release web@release-0\.1\.0 was built from tag release-0\.1\.0, which is not in the repository at /);
  assert.match(missing.hint ?? '', /git fetch --tags/);

  execFileSync('git', ['-C', dir, '-c', 'user.email=a@b', '-c', 'user.name=n', 'commit', '-q', '--allow-empty', '-m', 'two']);
  execFileSync('git', ['-C', dir, 'tag', 'release-0.1.0'], { stdio: 'ignore' });
  const moved = await refusedBeforeHosts(untagged(options(dir, commit)), dir);
  assert.match(moved.message, /^nothing was changed: tag release-0\.1\.0 now points to [0-9a-f]{12}, but release web@release-0\.1\.0 was built from [0-9a-f]{12}$/);
});

test('a record without a tag whose version tag names its commit gets as far as the hosts', async () => {
  const { dir, commit } = repo();
  const o = options(dir, commit);
  const err = await applyRelease({ ...o, release: { ...o.release, tag: undefined } }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof KilnError, String(err));
  assert.match(err.detail ?? '', /^127\.0\.0\.1:1: unreachable: /m, 'the preflight ran');
});

test('a record whose tag is not its version is refused', async () => {
  const { dir, commit } = repo();
  const o = options(dir, commit);
  const err = await refusedBeforeHosts({ ...o, release: { ...o.release, tag: 'release-0.0.1' } }, dir);
  assert.match(err.message, /^release web@release-0\.1\.0 records tag "release-0\.0\.1", but a release's tag is its version$/);
});
