/**
 * Bad input gets a clear error naming file/line/task, and a failed or interrupted build leaves
 * nothing behind: no mounts, no work tree, no partial artifact; a rerun then succeeds.
 */
import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { builtExample, CACHE_DIR, E2E_DIR, exampleRepo, git, kiln, mountsUnder, netNamespaces, RUN_ID, sandboxProcesses } from './fixture.js';

function assertNothingLeft(dir: string): void {
  assert.deepEqual(mountsUnder(dir), [], 'no mounts remain under the repository');
  const work = join(dir, '.kiln/work');
  assert.deepEqual(existsSync(work) ? readdirSync(work) : [], [], 'no work tree remains');
  const out = join(dir, '.kiln/out');
  assert.deepEqual(existsSync(out) ? readdirSync(out) : [], [], 'no partial artifact exists');
}

function edit(dir: string, file: string, from: string | RegExp, to: string): void {
  const p = join(dir, file);
  const s = readFileSync(p, 'utf8');
  const t = s.replace(from, to);
  assert.notEqual(t, s, `edit of ${file} must change it`);
  writeFileSync(p, t);
}

describe('bad input is refused with a located error', () => {
  test('malformed kiln.yaml names file:line:column', async () => {
    const dir = exampleRepo('bad-yaml', { tag: 'release-0.1.0', edit: (d) => edit(d, 'kiln.yaml', 'formats: [raw, qcow2', 'formats: [raw, qcow2\nbroken: [') });
    const r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 2);
    // At the bracket left open (formats: [raw, qcow2 then a new key), not where the parser gave up (the next line).
    const line = readFileSync(join(dir, 'kiln.yaml'), 'utf8').split('\n').indexOf('formats: [raw, qcow2') + 1;
    assert.ok(line > 0);
    assert.match(r.stderr, new RegExp(`kiln\\.yaml:${line}:10: invalid YAML: "\\[" is not closed: expected "\\]"`));
    assertNothingLeft(dir);
  });

  test('an unknown key names the key, its position and the keys expected', async () => {
    const dir = exampleRepo('unknown-key', { tag: 'release-0.1.0', edit: (d) => edit(d, 'kiln.yaml', 'provision:\n', 'provison_extra: 1\nprovision:\n') });
    const r = await kiln(['validate'], { cwd: dir });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /kiln\.yaml:\d+:1: unknown key 'provison_extra' in top level \(expected one of: name, description/);
  });

  test('a playbook that does not exist', async () => {
    const dir = exampleRepo('no-playbook', { tag: 'release-0.1.0', edit: (d) => edit(d, 'kiln.yaml', 'playbook: playbook.yml', 'playbook: site.yml') });
    const r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /kiln\.yaml:\d+:\d+: playbook not found: site\.yml/);
    assertNothingLeft(dir);
  });

  test('a playbook with a syntax error names the file and line', async () => {
    const dir = exampleRepo('bad-playbook', { tag: 'release-0.1.0', edit: (d) => edit(d, 'roles/web/tasks/main.yml', '    state: present\n', '    state: present\n   bad indent: [\n') });
    const r = await kiln(['build'], { cwd: dir });
    assert.notEqual(r.code, 0);
    // The line of the mistake itself (Ansible's own message names the line after it).
    const line = readFileSync(join(dir, 'roles/web/tasks/main.yml'), 'utf8').split('\n').indexOf('   bad indent: [') + 1;
    assert.match(r.stderr, new RegExp(`roles/web/tasks/main\\.yml:${line}:\\d+: playbook syntax error`));
    assertNothingLeft(dir);
  });

  test('a release build from an untagged commit or a dirty tree is refused', async () => {
    const dir = exampleRepo('untagged');
    let r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /has no tag matching 'release-\*'/);
    assert.match(r.stderr, /--snapshot/);
    git(dir, 'tag', 'release-0.1.0');
    writeFileSync(join(dir, 'notes.txt'), 'uncommitted\n');
    r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refusing a release build from a dirty tree/);
    assertNothingLeft(dir);
  });
});

describe('failed builds leave nothing behind', () => {
  test('a failing task fails the build, naming the task and its error', async () => {
    const dir = exampleRepo('failing-task', {
      tag: 'release-0.1.0',
      edit: (d) => edit(d, 'roles/web/tasks/main.yml', /^/, '- name: Check the frobnicator\n  ansible.builtin.command: /bin/false\n  changed_when: false\n\n'),
    });
    const r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /task failed: web : Check the frobnicator/);
    assert.match(r.stderr, /roles\/web\/tasks\/main\.yml:1/);
    assertNothingLeft(dir);
  });

  test('an unreachable mirror is a clear error', async () => {
    const dir = exampleRepo('bad-mirror', { tag: 'release-0.1.0', edit: (d) => edit(d, 'kiln.yaml', 'mirror: http://deb.debian.org/debian', 'mirror: http://127.0.0.1:9/debian') });
    const r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot fetch http:\/\/127\.0\.0\.1:9\/debian\/dists\/trixie\/InRelease/);
    assert.match(r.stderr, /source\.debian\.mirror/);
    assertNothingLeft(dir);
  });

  test('an archive not signed by the configured keyring is refused (an unverifiable source)', async () => {
    const dir = exampleRepo('bad-keyring', { tag: 'release-0.1.0', edit: (d) => edit(d, 'kiln.yaml', 'mirror: http://deb.debian.org/debian', 'mirror: http://deb.debian.org/debian\n    keyring: /usr/share/keyrings/debian-archive-removed-keys.gpg') });
    const r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /InRelease at http:\/\/deb\.debian\.org\/debian\/dists\/trixie\/InRelease is not signed by a key in \/usr\/share\/keyrings\/debian-archive-removed-keys\.gpg/);
    assert.match(r.stderr, /verify: false/);
    assertNothingLeft(dir);
  });

  test('verify: false is an explicit opt-out that is recorded as unverified', async () => {
    const { verifyArchive } = await import('../../src/source/debian.js');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const warnings: string[] = [];
    const logger = { verbose: false, info() {}, debug() {}, warn: (m: string) => warnings.push(m) };
    const d = { suite: 'bookworm', mirror: 'http://deb.debian.org/debian', components: ['main'], kernel: 'k', packages: [], keyring: '/usr/share/keyrings/debian-archive-keyring.gpg', max_age: '365d' };
    const off = await verifyArchive({ ...d, verify: false }, mkdtempSync(join(tmpdir(), 'kiln-v-')), logger);
    assert.equal(off.verified, false);
    assert.match(off.inReleaseSha256, /^[0-9a-f]{64}$/);
    assert.match(warnings.join('\n'), /NOT checked/);
    const on = await verifyArchive({ ...d, verify: true }, mkdtempSync(join(tmpdir(), 'kiln-v-')), logger);
    assert.equal(on.verified, true);
    assert.match(on.signingKeyFingerprint ?? '', /^[0-9A-F]{40}$/);
    assert.equal(on.inReleaseSha256, off.inReleaseSha256);
  });

  test('--on-error=keep keeps the tree and prints the command that opens it in the same sandbox, and the cleanup', async () => {
    const dir = exampleRepo('keep', {
      tag: 'release-0.1.0',
      edit: (d) => edit(d, 'roles/web/tasks/main.yml', /^/, '- name: Break on purpose\n  ansible.builtin.command: /bin/false\n  changed_when: false\n\n'),
    });
    const r = await kiln(['build', '--on-error=keep'], { cwd: dir });
    assert.equal(r.code, 1);
    // Printed for a shell: the work area's path has a space (fixture.ts), so it is quoted.
    const shell = /^\s+kiln shell '([^']+)'$/m.exec(r.stderr);
    assert.ok(shell, `prints the shell command:\n${r.stderr.slice(-2000)}`);
    assert.ok(existsSync(join(shell[1], 'root/etc/debian_version')), 'the kept tree is there');
    assert.deepEqual(mountsUnder(dir), [], 'keeping the tree keeps no mounts');
    assert.deepEqual(sandboxProcesses(), [], 'nor a sandbox');
    const cleanup = /^\s+rm -rf ('[^']+')$/m.exec(r.stderr);
    assert.ok(cleanup);
    // The printed command really opens the tree, in the sandbox with the locked apt, /dev and /run the playbook had.
    const inside = await kiln(['shell', shell[1], '--', '/bin/sh', '-c', 'cat /etc/debian_version; echo $(ls /dev); test -x /run/kiln/facade/python3 && echo facade; id -u'], { cwd: dir });
    assert.equal(inside.code, 0, inside.stderr);
    const [version, dev, facade, uid] = inside.stdout.trim().split('\n');
    assert.match(version, /^13\./);
    assert.doesNotMatch(dev, /\b(sd|vd|nvme|xvd)[a-z0-9]*\b/, 'no host disk');
    assert.equal(facade, 'facade');
    assert.equal(uid, '0');
    const bad = await kiln(['shell', join(dir, 'nowhere')], { cwd: dir });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /is not the work area of a build that reached provisioning/);
    assert.deepEqual(mountsUnder(dir), []);
    assert.deepEqual(sandboxProcesses(), []);
    execFileSync('sh', ['-c', `rm -rf ${cleanup[1]}`]);
    assert.equal(existsSync(shell[1]), false, 'the printed cleanup command removes the work area, and only it');
    assert.ok(existsSync(dir), 'the repository beside it is still there');
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} during provisioning stops, cleans up, and a rerun succeeds`, async () => {
      const dir = exampleRepo(`signal-${signal}`, {
        tag: 'release-0.1.0',
        edit: (d) => {
          edit(d, 'roles/web/tasks/main.yml', /^/, '- name: Take a while\n  ansible.builtin.command: sleep 600\n  changed_when: false\n  when: kiln_slow | default(false)\n\n');
          edit(d, 'kiln.yaml', /^formats: .*$/m, 'formats: [raw]');
          edit(d, 'kiln.yaml', 'provision:\n  playbook: playbook.yml', 'provision:\n  playbook: playbook.yml\n  vars: { kiln_slow: true }');
        },
      });
      let sent = false;
      const netnsBefore = netNamespaces();
      const r = await kiln(['build'], {
        cwd: dir, timeoutMs: 600_000,
        onStderr: (_c, child) => { if (!sent && /Take a while/.test(_c)) { sent = true; setTimeout(() => child.kill(signal), 1500); } },
      });
      assert.ok(sent, 'provisioning reached the slow task');
      assert.equal(r.code, signal === 'SIGINT' ? 130 : 143, r.stderr.slice(-1500));
      assert.match(r.stderr, new RegExp(`interrupted by ${signal}`));
      assertNothingLeft(dir);
      const ps = (await import('node:child_process')).execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
      assert.doesNotMatch(ps, new RegExp(`sleep 600`), 'no process from the build survives');
      assert.deepEqual(sandboxProcesses(), [], 'no sandbox, network helper or Ansible survives');
      assert.deepEqual(netNamespaces(), netnsBefore, 'no network namespace is left');
      if (signal === 'SIGTERM') {
        edit(dir, 'kiln.yaml', 'vars: { kiln_slow: true }', 'vars: { kiln_slow: false }');
        git(dir, 'commit', '-qam', 'not slow');
        git(dir, 'tag', '-f', 'release-0.1.0');
        const again = await kiln(['build'], { cwd: dir });
        assert.equal(again.code, 0, again.stderr.slice(-3000));
        assert.deepEqual(mountsUnder(dir), []);
        assert.deepEqual(readdirSync(join(dir, '.kiln/work')), []);
      }
    });
  }
});

/** Processes whose command line names dir: what a build started there and left running. */
function processesIn(dir: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(dir) && !/\bps -eo\b/.test(l)).map((l) => l.trim());
}

/**
 * A cache directory of its own that shares the shared one's base trees, tools tree and apt files (by
 * symbolic links: a hard link would change each file's ctime, which the tools tree's digest covers)
 * and, of the step cache, only the entries of the given steps (hard-linked; an entry is checked by
 * size, inode and mtime). With the provisioned trees only, a build of the example there takes its
 * tree from the cache and makes the disk, the audit and the formats itself; with the disk and its
 * audit too, it goes straight to the formats.
 */
function cacheWithEntries(dir: string, steps: readonly string[]): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'steps'), { recursive: true });
  for (const name of readdirSync(CACHE_DIR)) if (name !== 'steps') symlinkSync(join(CACHE_DIR, name), join(dir, name));
  const cached = join(CACHE_DIR, 'steps');
  const found = new Set<string>();
  for (const key of existsSync(cached) ? readdirSync(cached) : []) {
    const entry = join(cached, key, 'entry.json');
    const step = existsSync(entry) ? (JSON.parse(readFileSync(entry, 'utf8')) as { step?: string }).step : undefined;
    if (!step || !steps.includes(step)) continue;
    execFileSync('cp', ['-al', '--', join(cached, key), join(dir, 'steps', key)]);
    found.add(step);
  }
  assert.deepEqual(steps.filter((x) => !found.has(x)), [], `the shared cache holds an entry of each of ${steps.join(', ')}`);
  return dir;
}

describe('kill -9 and interrupts of kiln build in each long step', () => {
  test('killed (-9) or interrupted (SIGINT, SIGTERM) while it unpacks the base tree, assembles the disk, audits it and writes the formats: no tool keeps running, no mount is left, an interrupt cleans up, and the next build cleans up after a kill and succeeds', async () => {
    // The example's own files, tag and (fixed-date) commit, so the step outputs the shared example
    // build stored are this repository's too: the builds stopped in the disk and audit steps take the
    // provisioned tree from a cache of their own instead of running the playbook again, and the ones
    // stopped in the formats step, and the last one, the disk and its audit as well. The builds stopped
    // while they unpack the base tree run without the step cache (a cached tree is never unpacked).
    // Provisioning has its own tests above and below.
    await builtExample();
    const dir = exampleRepo('kill-9', { tag: 'release-0.1.0' });
    const treeCache = cacheWithEntries(join(E2E_DIR, RUN_ID, 'kill-9-cache'), ['tree']);
    const diskCache = cacheWithEntries(join(E2E_DIR, RUN_ID, 'kill-9-cache-disk'), ['tree', 'disk', 'audit']);
    const cacheFor = (stepName: string) => (stepName === 'formats' ? diskCache : treeCache);
    const work = join(dir, '.kiln/work');
    // Each stop lands while the step's host tools run (tar; sfdisk, mke2fs, debugfs, mtools; debugfs and
    // the secret scan; qemu-img, gzip, tar).
    const stops = [
      ['configure', 'SIGKILL', 1500], ['configure', 'SIGINT', 1500],
      ['disk', 'SIGKILL', 2500], ['disk', 'SIGINT', 2500],
      ['audit', 'SIGKILL', 2000], ['audit', 'SIGTERM', 2000],
      ['formats', 'SIGKILL', 4000], ['formats', 'SIGTERM', 4000],
    ] as const;
    let killed = 0;
    for (const [stepName, signal, delayMs] of stops) {
      const what = `${signal} in ${stepName}`;
      let sent = false;
      const cacheDir = cacheFor(stepName);
      const r = await kiln(['build', '--no-release'], {
        cwd: dir, timeoutMs: 900_000, env: { KILN_CACHE_DIR: cacheDir }, cache: stepName !== 'configure',
        onStderr: (chunk, child) => { if (!sent && new RegExp(`\\] ${stepName}:`).test(chunk)) { sent = true; setTimeout(() => child.kill(signal), delayMs); } },
      });
      assert.ok(sent, `the build reached the ${stepName} step`);
      if (signal === 'SIGKILL') {
        assert.equal(r.signal, 'SIGKILL', `${what}: ${r.stderr.slice(-800)}`);
        killed++;
      } else {
        assert.equal(r.code, signal === 'SIGINT' ? 130 : 143, `${what}: ${r.stderr.slice(-1500)}`);
        assert.match(r.stderr, new RegExp(`interrupted by ${signal}`), what);
      }
      // Host tools and the sandbox die with Kiln (each is started with a parent-death signal), and a
      // sandbox's mount namespace goes with its last process: give the kernel a moment (5 s at most)
      // for all three, then require each to be empty.
      let left = { processes: processesIn(dir), mounts: mountsUnder(dir), sandboxes: sandboxProcesses() };
      for (let i = 0; i < 20 && Object.values(left).some((l) => l.length); i++) {
        await new Promise((res) => setTimeout(res, 250));
        left = { processes: processesIn(dir), mounts: mountsUnder(dir), sandboxes: sandboxProcesses() };
      }
      assert.deepEqual(left.processes, [], `no process of the build stopped by ${what} keeps running`);
      assert.deepEqual(left.mounts, [], `no mount is left by the build stopped by ${what}`);
      assert.deepEqual(left.sandboxes, [], `no sandbox, network helper or Ansible survives ${what}`);
      const out = join(dir, '.kiln/out');
      assert.deepEqual(existsSync(out) ? readdirSync(out) : [], [], `no artifact reaches the out directory (${what})`);
      // kill -9 leaves the scratch (nothing can clean it up) and the next build removes a dead build's;
      // an interrupted build removes its own, and its half-written cache entry, before it exits.
      assert.equal(readdirSync(work).length, signal === 'SIGKILL' ? 1 : 0, `work areas after ${what}: ${readdirSync(work).join(', ')}`);
      if (signal !== 'SIGKILL') assert.deepEqual(readdirSync(join(cacheDir, 'steps')).filter((n) => n.endsWith('.tmp')), [], `no temporary cache entry after ${what}`);
    }
    assert.equal(killed, 4);
    const again = await kiln(['build', '--no-release'], { cwd: dir, env: { KILN_CACHE_DIR: diskCache }, cache: true });
    assert.equal(again.code, 0, again.stderr.slice(-3000));
    assert.deepEqual(readdirSync(work), [], 'the dead builds\' work areas are gone');
    for (const c of [treeCache, diskCache]) assert.deepEqual(readdirSync(join(c, 'steps')).filter((n) => n.endsWith('.tmp')), [], 'no temporary cache entry is left');
    assert.deepEqual(mountsUnder(dir), []);
  });
});
