/**
 * `kiln apply` upgrades a running machine: release-0.1.0 pins kiln-demo-app 1.0 from a local apt
 * repository; a VM boots from it; release-0.2.0 pins 2.0, and applying it upgrades the VM and stamps
 * the version. Re-applying changes nothing; --check --diff reports a hand edit; bad hosts, keys,
 * releases, downgrades and moved tags are refused before anything changes.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bootVm, freePort, type RunningVm } from '../../src/vm/qemu.js';
import { buildAptRepo, serveAptRepo, setAppVersion, upgradeRepo, type AptServer } from './apply-fixture.js';
import { E2E_DIR, git, kiln, RUN_ID, type BuildRecordLite, type KilnRun } from './fixture.js';

interface ApplyJson { release: string; check: boolean; hosts: { host: string; from?: string; to: string; status: string; changed: string[]; totals: { changed: number; failures: number } }[] }

let server: AptServer | undefined;
let vm: RunningVm | undefined;
let dir: string;
let commit2: string;
/** The known_hosts file the --accept-new test pinned the VM's key into. */
let knownHosts: string | undefined;

/** What an apply may change on the VM: the package, the stamp, the managed file. */
async function state(): Promise<{ app: string; release: string; osRelease: string; conf: string }> {
  const r = await vm!.ssh("dpkg-query -W -f='${Version}' kiln-demo-app; echo; echo ==; cat /etc/release; echo ==; grep ^IMAGE_ /etc/os-release; echo ==; cat /etc/kiln-demo.conf");
  const [app, release, osRelease, conf] = r.stdout.split('==\n');
  return { app: app.trim(), release, osRelease, conf };
}

function apply(ref: string, ...extra: string[]): Promise<KilnRun> {
  return kiln(['apply', ref, '--host', `kiln@127.0.0.1:${vm!.sshPort}`, '--key', vm!.keyFile, '--insecure-host-keys', ...extra], { cwd: dir });
}

before(async () => {
  const base = join(E2E_DIR, RUN_ID);
  const port = await freePort();
  buildAptRepo(join(base, 'apt-repo'), ['1.0', '2.0']);
  server = await serveAptRepo(join(base, 'apt-repo'), port);
  dir = upgradeRepo('upgrade', { repoPort: port, tag: 'release-0.1.0', appVersion: '1.0' });
  const b1 = await kiln(['build', '--json'], { cwd: dir });
  assert.equal(b1.code, 0, `build of release-0.1.0 failed:\n${b1.stderr.slice(-4000)}`);
  const raw = (JSON.parse(b1.stdout) as BuildRecordLite).artifacts[0].file;
  // release-0.2.0 pins 2.0; it is built while the VM of release-0.1.0 boots.
  setAppVersion(dir, '2.0');
  git(dir, 'commit', '-qam', 'kiln-demo-app 2.0');
  git(dir, 'tag', 'release-0.2.0');
  commit2 = git(dir, 'rev-parse', 'HEAD');
  const [booted, b2] = await Promise.allSettled([bootVm({ image: raw, firmware: 'bios' }), kiln(['build'], { cwd: dir })]);
  if (booted.status === 'fulfilled') vm = booted.value;
  else throw booted.reason;
  assert.ok(b2.status === 'fulfilled' && b2.value.code === 0, `build of release-0.2.0 failed:\n${b2.status === 'fulfilled' ? b2.value.stderr.slice(-4000) : String(b2.reason)}`);
});

after(async () => {
  await vm?.stop();
  await server?.stop();
});

describe('kiln apply', () => {
  test('upgrades the running VM to the pinned version of the release and stamps the release', async () => {
    const s0 = await state();
    assert.equal(s0.app, '1.0');
    assert.match(s0.release, /^IMAGE_VERSION=release-0\.1\.0$/m);
    const r = await apply('web@release-0.2.0');
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const host = `127.0.0.1:${vm!.sshPort}`;
    // Per-task results, per host, as they arrive; then the summary.
    assert.match(r.stderr, new RegExp(`^  ${host}  changed +demo_app : Install the pinned kiln-demo-app$`, 'm'));
    // The apt source names the host as the VM reaches it (10.0.2.2), not as the build sandbox did.
    assert.match(r.stderr, new RegExp(`^  ${host}  changed +demo_app : Add the demo apt repository$`, 'm'));
    assert.match(r.stderr, new RegExp(`^  ${host}  changed +demo_app : Restart kiln-demo-app$`, 'm'), 'the handler ran on the host');
    assert.match(r.stderr, new RegExp(`^  ${host}  upgraded +release-0\\.1\\.0 -> release-0\\.2\\.0  ok=\\d+ changed=\\d+ failed=0 unreachable=0$`, 'm'));
    const s = await state();
    assert.equal(s.app, '2.0');
    assert.equal((await vm!.ssh('cat /usr/share/kiln-demo-app/VERSION')).stdout, '2.0\n');
    assert.match(s.release, /^IMAGE_ID=web$/m);
    assert.match(s.release, /^IMAGE_VERSION=release-0\.2\.0$/m);
    assert.match(s.release, new RegExp(`^IMAGE_COMMIT=${commit2}$`, 'm'));
    assert.match(s.osRelease, /^IMAGE_VERSION="release-0\.2\.0"$/m);
    assert.match(s.conf, /^app_version = 2\.0$/m);
    assert.match(s.conf, /^release = release-0\.2\.0$/m, 'templates see the version applied');
    // Restarted by the handler over SSH, the service says the new version. (At build time the restart
    // was only recorded as deferred, and the unit is not enabled, so it never ran with 1.0.)
    const journal = (await vm!.ssh('sudo journalctl -b -u kiln-demo-app --no-pager -o cat')).stdout;
    assert.match(journal, /kiln-demo-app 2\.0 started/);
    assert.doesNotMatch(journal, /kiln-demo-app 1\.0 started/);
  });

  test('a second apply changes nothing, on several hosts in parallel with a summary per host', async () => {
    const p = vm!.sshPort;
    const r = await kiln(['apply', 'web@release-0.2.0', '--host', `kiln@127.0.0.1:${p}`, '--host', `kiln@localhost:${p}`, '--key', vm!.keyFile, '--insecure-host-keys', '--json'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const j = JSON.parse(r.stdout) as ApplyJson;
    assert.deepEqual(j.hosts.map((h) => [h.host, h.status, h.totals.changed]), [[`127.0.0.1:${p}`, 'unchanged', 0], [`localhost:${p}`, 'unchanged', 0]]);
    assert.match(r.stderr, /summary \(2 hosts\):/);
    assert.match(r.stderr, new RegExp(`^  localhost:${p} +unchanged +release-0\\.2\\.0 -> release-0\\.2\\.0  ok=\\d+ changed=0 failed=0`, 'm'));
  });

  test('--check --diff reports a hand-edited managed file as drift, and changes nothing', async () => {
    await vm!.ssh("echo 'debug = true' | sudo tee -a /etc/kiln-demo.conf >/dev/null");
    const before = await state();
    const r = await apply('web@release-0.2.0', '--check', '--diff', '--json');
    assert.equal(r.code, 3, `--check exits 3 on drift, for CI\n${r.stderr.slice(-4000)}`);
    const j = JSON.parse(r.stdout) as ApplyJson;
    assert.equal(j.hosts[0].status, 'drift');
    // The file differs, so the handler it notifies would run too.
    assert.deepEqual(j.hosts[0].changed, ['demo_app : Write the demo configuration', 'demo_app : Restart kiln-demo-app']);
    assert.match(r.stderr, /in check mode: nothing will change/);
    assert.match(r.stderr, /would change: demo_app : Write the demo configuration\n\s+would change: demo_app : Restart kiln-demo-app\n\s+demo_app : Write the demo configuration:\n\s+--- \/etc\/kiln-demo\.conf\n\s+\+\+\+ \/etc\/kiln-demo\.conf \(release-0\.2\.0\)\n(\s+ .*\n)+\s+-debug = true/);
    assert.deepEqual(await state(), before, 'check mode changed the host');
  });

  test('--accept-new pins the key of a host seen for the first time into --known-hosts; later runs check against it', async () => {
    knownHosts = join(E2E_DIR, RUN_ID, 'apply_known_hosts');
    writeFileSync(knownHosts, '');
    const host = `kiln@127.0.0.1:${vm!.sshPort}`;
    // Without --accept-new, a host not in the file is refused: never pinned silently. (kiln status reads
    // /etc/release only, with apply's host key handling: cheaper than a playbook run.)
    const unknown = await kiln(['apply', 'web@release-0.2.0', '--host', host, '--key', vm!.keyFile, '--known-hosts', knownHosts, '--check'], { cwd: dir });
    assert.equal(unknown.code, 4, unknown.stderr);
    assert.match(unknown.stderr, /unreachable: .*(Host key verification failed|host key is known)/);
    assert.match(unknown.stderr, /hint: the host's SSH key is not the one known for it .*--accept-new/);
    assert.equal(readFileSync(knownHosts, 'utf8'), '');
    const r = await kiln(['status', '--host', host, '--key', vm!.keyFile, '--known-hosts', knownHosts, '--accept-new'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stdout, /release-0\.2\.0/);
    // Found by ssh-keygen (Debian's ssh hashes the host names it writes).
    assert.match(execFileSync('ssh-keygen', ['-F', `[127.0.0.1]:${vm!.sshPort}`, '-f', knownHosts], { encoding: 'utf8' }), / ssh-ed25519 AAAA/);
    // Checked against the pinned key from now on, without --accept-new.
    const again = await kiln(['status', '--host', host, '--key', vm!.keyFile, '--known-hosts', knownHosts], { cwd: dir });
    assert.equal(again.code, 0, again.stderr.slice(-3000));
  });
});

describe('kiln status', () => {
  test('reports what each host runs, where it stands against a channel, and with --check its drift (exit 3); an unreachable host exits 4', async () => {
    const p = vm!.sshPort;
    const ch = await kiln(['channel', 'set', 'stable', 'web@release-0.2.0'], { cwd: dir });
    assert.equal(ch.code, 0, ch.stderr);
    const before = await state();
    // Two inventory names for the one VM, and the hand edit of the drift test still there.
    const r = await kiln(['status', '--host', `kiln@127.0.0.1:${p}`, '--host', `kiln@localhost:${p}`, '--key', vm!.keyFile, '--insecure-host-keys', '--channel', 'web@stable', '--check', '--json'], { cwd: dir });
    assert.equal(r.code, 3, r.stderr.slice(-4000));
    const j = JSON.parse(r.stdout) as { hosts: { host: string; image: string; version: string; commit: string; channel: { position: string }; drift: string; changed: string[] }[] };
    assert.deepEqual(j.hosts.map((h) => [h.host, h.image, h.version, h.commit, h.channel.position, h.drift]), [
      [`127.0.0.1:${p}`, 'web', 'release-0.2.0', commit2, 'current', 'drift'],
      [`localhost:${p}`, 'web', 'release-0.2.0', commit2, 'current', 'drift'],
    ]);
    assert.ok(j.hosts.every((h) => h.changed.includes('demo_app : Write the demo configuration')));
    assert.match(r.stderr, /checking 2 host\(s\) against web@release-0\.2\.0, in check mode/);
    assert.deepEqual(await state(), before, 'status changed nothing');

    const closed = await freePort();
    const t = await kiln(['status', '--host', `kiln@127.0.0.1:${p}`, '--host', `kiln@127.0.0.1:${closed}`, '--key', vm!.keyFile, '--insecure-host-keys'], { cwd: dir });
    assert.equal(t.code, 4, t.stderr);
    assert.match(t.stdout, /^HOST +IMAGE +VERSION +COMMIT +NOTE$/m);
    assert.match(t.stdout, new RegExp(`^127\\.0\\.0\\.1:${p} +web +release-0\\.2\\.0 +${commit2.slice(0, 12)}$`, 'm'));
    assert.match(t.stdout, new RegExp(`^127\\.0\\.0\\.1:${closed} +- +- +- +unreachable: ssh: connect to host 127\\.0\\.0\\.1 port ${closed}: Connection refused$`, 'm'));
  });
});

describe('kiln apply refuses, changing nothing', () => {
  async function refused(r: KilnRun, message: RegExp, unchanged: Awaited<ReturnType<typeof state>>, code = 1): Promise<void> {
    assert.equal(r.code, code, r.stderr);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /summary|\n {4}at /, 'no playbook ran and no stack trace');
    assert.deepEqual(await state(), unchanged);
  }

  test('an unreachable host (and the good host given with it is not touched either)', async () => {
    const s = await state();
    const closed = await freePort();
    const r = await kiln(['apply', 'web@release-0.2.0', '--host', `kiln@127.0.0.1:${vm!.sshPort}`, '--host', `kiln@127.0.0.1:${closed}`, '--key', vm!.keyFile, '--insecure-host-keys'], { cwd: dir });
    await refused(r, new RegExp(`error: nothing was changed: 1 problem\\(s\\) found before applying web@release-0\\.2\\.0\n  \\| 127\\.0\\.0\\.1:${closed}: unreachable: ssh: connect to host 127\\.0\\.0\\.1 port ${closed}: Connection refused`), s, 4);
    assert.match(r.stderr, /hint: check the address and port/);
    assert.match(s.conf, /debug = true/, 'the drift of the good host was not repaired');
  });

  test('a wrong key', async () => {
    const s = await state();
    const wrong = join(E2E_DIR, RUN_ID, 'wrong_key');
    rmSync(wrong, { force: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', wrong]);
    const r = await kiln(['apply', 'web@release-0.2.0', '--host', `kiln@127.0.0.1:${vm!.sshPort}`, '--key', wrong, '--insecure-host-keys'], { cwd: dir });
    await refused(r, /nothing was changed: .*\n.*unreachable: kiln@127\.0\.0\.1: Permission denied \(publickey/, s, 4);
    assert.match(r.stderr, /hint: the SSH key was refused: pass the right one with --key/);
  });

  test('a host whose key is not the one pinned (a machine re-created, or another one answering): exit 4, with what to do', async () => {
    const s = await state();
    assert.ok(knownHosts, 'the --accept-new test pinned a key');
    const other = join(E2E_DIR, RUN_ID, 'other_host_key');
    rmSync(other, { force: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const [pinned] = readFileSync(knownHosts, 'utf8').split('\n').filter((l) => / ssh-ed25519 /.test(l));
    const forged = join(E2E_DIR, RUN_ID, 'forged_known_hosts');
    writeFileSync(forged, `${pinned.split(' ')[0]} ${readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const r = await kiln(['apply', 'web@release-0.2.0', '--host', `kiln@127.0.0.1:${vm!.sshPort}`, '--key', vm!.keyFile, '--known-hosts', forged], { cwd: dir });
    await refused(r, /unreachable: .*(Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED)/, s, 4);
    assert.match(r.stderr, /hint: the host's SSH key is not the one known for it/);
  });

  test('a release that does not exist', async () => {
    const s = await state();
    await refused(await apply('web@release-9.9.9'), /error: no release web@release-9\.9\.9 in .*\.kiln\/store/, s);
  });

  test('a host that runs a newer release than the one applied, without --allow-downgrade', async () => {
    const s = await state();
    await refused(await apply('web@release-0.1.0'), new RegExp(`127\\.0\\.0\\.1:${vm!.sshPort}: runs release-0\\.2\\.0, newer than release-0\\.1\\.0 \\(pass --allow-downgrade to go back\\)`), s);
    assert.equal(s.app, '2.0');
  });

  test('a release whose tag now points to another commit', async () => {
    const s = await state();
    git(dir, 'commit', '-q', '--allow-empty', '-m', 'after the release');
    git(dir, 'tag', '-f', 'release-0.2.0');
    try {
      await refused(await apply('web@release-0.2.0'), /nothing was changed: tag release-0\.2\.0 now points to [0-9a-f]{12}, but release web@release-0\.2\.0 was built from [0-9a-f]{12}/, s);
    } finally {
      git(dir, 'tag', '-f', 'release-0.2.0', commit2);
    }
  });
});
