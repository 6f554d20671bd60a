/**
 * `kiln apply` upgrades a running machine: release-0.1.0 pins kiln-demo-app 1.0 from a local apt
 * repository; a VM boots from it; release-0.2.0 pins 2.0, and applying it upgrades the VM and stamps
 * the version (it also adds kiln-demo-extra and a line to the managed file: `kiln diff` of the two
 * releases lists exactly that). Re-applying changes nothing; --check --diff reports a hand edit; bad hosts, keys,
 * releases, downgrades and moved tags are refused before anything changes.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { bootVm, freePort, type RunningVm } from '../../src/vm/qemu.js';
import { addExtraPackageAndEditTemplate, buildAptRepo, serveAptRepo, setAppVersion, upgradeRepo, type AptServer } from './apply-fixture.js';
import { launchChromium, openFile, screenshot } from './browser.js';
import { E2E_DIR, git, kiln, RUN_ID, type BuildRecordLite, type KilnRun } from './fixture.js';

interface ApplyJson {
  release: string; check: boolean;
  hosts: { host: string; from?: string; to: string; status: string; changed: string[]; failed: string[]; totals: { changed: number; failures: number }; batch?: number; health?: string }[];
  batches?: { batch: number; of: number; hosts: string[]; result: string }[];
  stopped?: { batch: number; reason: string };
  resumable?: string;
}

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
  addExtraPackageAndEditTemplate(dir);
  git(dir, 'commit', '-qam', 'kiln-demo-app 2.0, and kiln-demo-extra');
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

interface DiffJson {
  a: { label: string; commit: string }; b: { label: string; commit: string };
  packages: { added: { name: string; version: string }[]; removed: unknown[]; changed: { name: string; from: string; to: string; security: boolean; cves: string[]; changelog?: { version: string; distribution: string }[] }[]; unchanged: number };
  files?: { path: string; change: string; what: string[] }[];
  git?: { files: { status: string; path: string }[]; patch?: string };
  settings: unknown[]; artifacts: { format: string; a?: number; b?: number }[]; signers: { a: string[]; b: string[] };
}

describe('kiln diff', () => {
  test('release-0.1.0 to release-0.2.0: exactly the package added, the package upgraded (with its security changelog entry), their files, the managed file, and the playbook changes', async () => {
    const r = await kiln(['diff', 'web@release-0.1.0', 'web@release-0.2.0', '--json'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout) as DiffJson;
    assert.equal(d.a.label, 'web@release-0.1.0');
    assert.equal(d.b.commit, commit2);
    assert.deepEqual(d.packages.added.map((p) => `${p.name} ${p.version}`), ['kiln-demo-extra 1.0']);
    assert.deepEqual(d.packages.removed, []);
    assert.deepEqual(d.packages.changed.map((c) => `${c.name} ${c.from} -> ${c.to}`), ['kiln-demo-app 1.0 -> 2.0']);
    const app = d.packages.changed[0];
    assert.deepEqual(app.changelog?.map((e) => `${e.version} ${e.distribution}`), ['2.0 bookworm-security'], 'the entries after 1.0, from the image of 0.2.0');
    assert.deepEqual(app.cves, ['CVE-2026-0001']);
    assert.equal(app.security, true);
    assert.ok(d.packages.unchanged > 100, `the Debian packages are unchanged (${d.packages.unchanged})`);
    // Files: every change is one of the two packages', dpkg's and apt's records of them, the managed
    // file, or what every release changes (the stamp, and fstab and grub.cfg naming the filesystem ids
    // derived from the version); and each expected one is there.
    const files = new Map((d.files ?? []).map((f) => [f.path, f]));
    for (const p of ['/usr/share/kiln-demo-extra', '/usr/share/kiln-demo-extra/README', '/var/lib/dpkg/info/kiln-demo-extra.list']) assert.equal(files.get(p)?.change, 'added', p);
    assert.deepEqual(files.get('/usr/share/kiln-demo-app/VERSION')?.what, ['content']);
    assert.deepEqual(files.get('/etc/kiln-demo.conf')?.what.filter((w) => !w.startsWith('size')), [], 'the managed file changed in size (a line added)');
    assert.equal(files.get('/etc/kiln-demo.conf')?.change, 'changed');
    assert.equal(files.get('/etc/release')?.change, 'changed');
    const explained = /^(\/usr\/share\/(kiln-demo-(app|extra)|doc\/kiln-demo-(app|extra))(\/|$)|\/var\/lib\/dpkg\/|\/var\/lib\/apt\/|\/var\/cache\/(apt|debconf)\/|\/var\/cache\/ldconfig|\/var\/log\/|\/etc\/kiln-demo\.conf$|\/etc\/(release|os-release|fstab)$|\/boot\/grub\/grub\.cfg$|\/usr\/lib\/os-release$|\/etc\/ld\.so\.cache$)/;
    const unexplained = [...files.values()].filter((f) => !explained.test(f.path)).map((f) => `${f.path} ${f.change} ${f.what.join(',')}`);
    assert.deepEqual(unexplained, [], 'no other file changed');
    // The repository: the role's defaults (the version), its tasks (the package) and its template (the line).
    assert.deepEqual(d.git?.files.map((f) => `${f.status} ${f.path}`), ['M roles/demo_app/defaults/main.yml', 'M roles/demo_app/tasks/main.yml', 'M roles/demo_app/templates/kiln-demo.conf.j2']);
    assert.match(d.git?.patch ?? '', /^\+extra = installed$/m);
    assert.deepEqual(d.settings, []);
    assert.deepEqual(d.artifacts.map((x) => x.format), ['raw']);
    // The terminal form says the same, grouped.
    const t = await kiln(['diff', 'web@release-0.1.0', 'web@release-0.2.0', '--no-files'], { cwd: dir });
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /^Packages: 1 added, 0 removed, 1 changed \(0 with security fixes\)/m, '--no-files reads no changelog');
    assert.match(t.stdout, /^ {2}\+ kiln-demo-extra 1\.0 \(all\)$/m);
    assert.match(t.stdout, /^Files: not compared$/m);
  });
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
    assert.match(r.stderr, new RegExp(`^  ${host}  upgraded +release-0\\.1\\.0 -> release-0\\.2\\.0  ok=\\d+ changed=\\d+ failed=0 unreachable=0  healthy$`, 'm'));
    // The release's apply.health ran after the change: the service and its configuration on the VM, and an HTTP GET.
    assert.match(r.stderr, /^health check: GET http:\/\/127\.0\.0\.1:\{\{ demo_repo_port \}\}\/.* -> 200, body ~ \/Package: kiln-demo-app\/ \(from this machine\); command: systemctl is-active --quiet kiln-demo-app && grep .* \(within 6s, every 2s\)$/m);
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

describe('kiln apply to a fleet: a downgrade, then a rollout in batches with health checks', () => {
  test('--allow-downgrade takes the VM back to release-0.1.0: the pinned package, the managed file and the stamp', async () => {
    const r = await apply('web@release-0.1.0', '--allow-downgrade');
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    assert.match(r.stderr, new RegExp(`^  127\\.0\\.0\\.1:${vm!.sshPort}  upgraded +release-0\\.2\\.0 -> release-0\\.1\\.0 .* healthy$`, 'm'));
    const s = await state();
    assert.equal(s.app, '1.0');
    assert.match(s.release, /^IMAGE_VERSION=release-0\.1\.0$/m);
    assert.match(s.osRelease, /^IMAGE_VERSION="release-0\.1\.0"$/m);
    assert.match(s.conf, /^app_version = 1\.0$/m);
    assert.doesNotMatch(s.conf, /debug = true/, 'the hand edit is gone: the file is the release\'s');
  });

  test('an inventory with groups, --batch 1: the second batch fails its health check, the rollout stops and the third is untouched; --resume completes it', async () => {
    const p = vm!.sshPort;
    const base = join(E2E_DIR, RUN_ID);
    const inv = join(base, 'fleet.ini');
    // Three inventory names for the one VM; a canary group first. web2's health URL points at a missing object.
    const inventory = (web2: string) => ['[canary]', 'web1', '[web]', `web2${web2}`, 'web3', '[fleet:children]', 'canary', 'web',
      '[all:vars]', `ansible_host=127.0.0.1`, `ansible_port=${p}`, 'ansible_user=kiln', 'demo_record_applied=true', ''].join('\n');
    writeFileSync(inv, inventory(' demo_health_object=missing'));
    await vm!.ssh('sudo rm -f /var/lib/kiln-demo-applied-*');
    const env = { KILN_STATE_DIR: join(base, 'rollout-state') };
    rmSync(env.KILN_STATE_DIR, { recursive: true, force: true });
    // Host keys checked against the file the --accept-new test pinned (the same address and port for every name).
    const args = ['apply', 'web@release-0.2.0', '--inventory', inv, '--key', vm!.keyFile, ...(knownHosts ? ['--known-hosts', knownHosts] : ['--insecure-host-keys']), '--batch', '1', '--json'];
    const r = await kiln(args, { cwd: dir, env });
    assert.equal(r.code, 1, r.stderr.slice(-4000));
    const j = JSON.parse(r.stdout) as ApplyJson;
    assert.deepEqual(j.hosts.map((h) => [h.host, h.status, h.batch, h.from]), [['web1', 'upgraded', 1, 'release-0.1.0'], ['web2', 'unhealthy', 2, 'release-0.1.0'], ['web3', 'not started', 3, 'release-0.1.0']]);
    assert.equal(j.hosts[0].health, 'healthy');
    assert.match(j.hosts[1].failed.join('\n'), new RegExp(`^health: GET http://127\\.0\\.0\\.1:\\d+/missing: Status code was 404`, 'm'));
    assert.deepEqual(j.batches?.map((b) => [b.hosts, b.result]), [[['web1'], 'passed'], [['web2'], 'failed'], [['web3'], 'not started']]);
    assert.equal(j.stopped?.batch, 2);
    assert.match(r.stderr, /^batch 1\/3: web1$/m);
    assert.match(r.stderr, /^batch 1\/3 passed: web1 upgraded, healthy$/m);
    assert.match(r.stderr, /^batch 2\/3 failed: web2 unhealthy$/m);
    assert.match(r.stderr, /^rollout stopped after batch 2\/3: 1 host\(s\) failed, more than --max-failures 0 allows: web2 \(health: GET .*\/missing: Status code was 404/m);
    assert.match(r.stderr, /^  not contacted after the preflight: web3$/m);
    assert.match(r.stderr, /^  to go on once fixed: kiln apply web@release-0\.2\.0 .*--batch 1 --resume \(applies the hosts not done: web2, web3;/m);
    // The VM: upgraded by batch 1; web1 and web2 reached, web3 not.
    const s = await state();
    assert.equal(s.app, '2.0');
    assert.match(s.release, /^IMAGE_VERSION=release-0\.2\.0$/m);
    const marks = async () => (await vm!.ssh('cd /var/lib && grep -H . kiln-demo-applied-* || true')).stdout.split('\n').map((l) => l.trim()).filter(Boolean).sort();
    assert.deepEqual(await marks(), ['kiln-demo-applied-web1:release-0.2.0', 'kiln-demo-applied-web2:release-0.2.0']);
    assert.ok(j.resumable && existsSync(j.resumable), 'the rollout record is kept for --resume');

    // Fixed (web2's health URL), the rollout resumes: web2 again, then web3; web1 is not contacted.
    writeFileSync(inv, inventory(''));
    const again = await kiln([...args.filter((a) => a !== '--batch' && a !== '1'), '--resume'], { cwd: dir, env });
    assert.equal(again.code, 0, again.stderr.slice(-4000));
    const k = JSON.parse(again.stdout) as ApplyJson;
    assert.deepEqual(k.hosts.map((h) => [h.host, h.status, h.batch, h.health]), [['web1', 'done before', 1, undefined], ['web2', 'unchanged', 2, 'healthy'], ['web3', 'upgraded', 3, 'healthy']]);
    assert.match(again.stderr, /^resuming the rollout of web@release-0\.2\.0 stopped at batch 2 of 3/m);
    assert.doesNotMatch(again.stderr, /^  web1  (ok|changed|failed|skipped|unreachable) +\S/m, 'no task ran on web1');
    assert.deepEqual(await marks(), ['kiln-demo-applied-web1:release-0.2.0', 'kiln-demo-applied-web2:release-0.2.0', 'kiln-demo-applied-web3:release-0.2.0']);
    assert.deepEqual(readdirSync(join(env.KILN_STATE_DIR, 'rollouts')), [], 'a finished rollout leaves no record');

    // kiln status over the same inventory: every name at release-0.2.0.
    const st = await kiln(['status', '--inventory', inv, '--key', vm!.keyFile, '--insecure-host-keys', '--json'], { cwd: dir });
    assert.equal(st.code, 0, st.stderr);
    assert.deepEqual((JSON.parse(st.stdout) as { hosts: { host: string; version: string }[] }).hosts.map((h) => [h.host, h.version]), [['web1', 'release-0.2.0'], ['web2', 'release-0.2.0'], ['web3', 'release-0.2.0']]);
    // And with --check, in sync with its release: exit 0 (one name: a check-mode run per name costs a minute under TCG).
    const sync = await kiln(['status', '--host', `kiln@127.0.0.1:${p}`, '--key', vm!.keyFile, '--insecure-host-keys', '--check', '--json'], { cwd: dir });
    assert.equal(sync.code, 0, sync.stderr);
    assert.deepEqual((JSON.parse(sync.stdout) as { hosts: { version: string; drift: string }[] }).hosts.map((h) => [h.version, h.drift]), [['release-0.2.0', 'in sync']]);
  });
});

describe('kiln report', () => {
  test('the release page and the store index in headless Chromium: no request, no console error, every section with the releases\' data, copy buttons, the SBOM filter, links; screenshots at desktop and phone widths', async (t) => {
    const ch = await kiln(['channel', 'set', 'production', 'web@release-0.2.0'], { cwd: dir });
    assert.equal(ch.code, 0, ch.stderr);
    const out = join(E2E_DIR, RUN_ID, 'report');
    const one = await kiln(['report', 'web@release-0.2.0', '--out', join(out, 'web.html')], { cwd: dir });
    assert.equal(one.code, 0, one.stderr);
    const site = await kiln(['report', '--index', '--out', join(out, 'site')], { cwd: dir });
    assert.equal(site.code, 0, site.stderr);
    const resolved = JSON.parse((await kiln(['resolve', 'web@release-0.2.0', '--json'], { cwd: dir })).stdout) as { digest: string; artifacts: { format: string; digest: string }[] };
    const shots = join(E2E_DIR, 'report-screenshots');
    const browser = await launchChromium();
    try {
      const { page, requests, errors } = await openFile(browser, join(out, 'web.html'), { width: 1280, height: 900 });
      assert.deepEqual(requests, [pathToFileURL(join(out, 'web.html')).href], 'the page loads nothing but itself');
      assert.equal(await page.locator('h1').innerText(), 'web@release-0.2.0 ok');
      for (const id of ['summary', 'artifacts', 'published', 'signatures', 'ancestry', 'channels', 'changes', 'audit', 'provenance', 'timings', 'sbom']) assert.ok(await page.locator(`section#${id}`).isVisible(), id);
      assert.match(await page.locator('#artifacts').innerText(), new RegExp(`raw\\s+web-release-0\\.2\\.0\\.raw.*\\n?.*${resolved.artifacts[0].digest.slice(0, 23)}`));
      assert.match(await page.locator('#channels').innerText(), /production this release\s+release-0\.2\.0/);
      const changes = await page.locator('#changes').innerText();
      assert.match(changes, /Since web@release-0\.1\.0: 1 added, 0 removed, 1 changed/);
      assert.match(changes, /added\s+kiln-demo-extra\s+1\.0/);
      assert.match(changes, /upgrade\s+kiln-demo-app\s+1\.0 → 2\.0/);
      assert.match(await page.locator('#provenance').innerText(), /debian-archive/);
      // The step chart: Chart.js drew the build's steps.
      const labels = await page.evaluate(() => (window as unknown as { Chart: { getChart(c: Element): { data: { labels: string[] } } | undefined } }).Chart.getChart(document.getElementById('steps-chart') as Element)?.data.labels);
      assert.ok(labels?.includes('provision') && labels.includes('formats'), `chart labels: ${labels}`);
      // The SBOM filter, and a copy button.
      const total = await page.locator('#sbom tbody tr').count();
      assert.ok(total > 100, `${total} packages`);
      await page.fill('#sbom-filter', 'kiln-demo');
      assert.equal(await page.locator('#sbom-count').innerText(), `2 of ${total}`);
      assert.equal(await page.locator('#sbom tbody tr:visible').count(), 2);
      const copy = page.locator(`#summary button.copy[data-copy="${resolved.digest}"]`);
      await copy.click();
      assert.equal(await copy.innerText(), 'copied');
      assert.equal(await copy.getAttribute('data-copied'), resolved.digest);
      await page.fill('#sbom-filter', '');
      await page.locator('nav a[href="#sbom"]').click();
      assert.equal(await page.evaluate(() => location.hash), '#sbom');
      await screenshot(page, join(shots, 'release-desktop.png'));
      assert.deepEqual(errors, []);
      // A phone, dark: nothing wider than the screen (tables scroll inside their cards).
      const phone = await openFile(browser, join(out, 'web.html'), { width: 390, height: 844, dark: true });
      assert.ok(await phone.page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll on a phone');
      assert.equal(await phone.page.evaluate(() => getComputedStyle(document.body).backgroundColor), 'rgb(18, 18, 18)', 'dark mode');
      await screenshot(phone.page, join(shots, 'release-phone-dark.png'));
      assert.deepEqual(phone.errors, []);
      // The store index: both releases, linked to their pages, which open.
      const index = await openFile(browser, join(out, 'site', 'index.html'), { width: 1280, height: 900 });
      const rows = await index.page.locator('#releases tbody tr').allInnerTexts();
      assert.deepEqual(rows.map((r) => r.split('\t')[0]), ['web@release-0.1.0', 'web@release-0.2.0']);
      assert.match(await index.page.locator('#channels').innerText(), /web\s+production\s+release-0\.2\.0/);
      await screenshot(index.page, join(shots, 'index-desktop.png'));
      await index.page.locator('#releases a', { hasText: 'web@release-0.2.0' }).click();
      await index.page.waitForLoadState('load');
      assert.ok(index.page.url().endsWith('/site/web%40release-0.2.0.html'), index.page.url());
      await index.page.locator('#changes a', { hasText: 'web@release-0.1.0' }).click();
      await index.page.waitForLoadState('load');
      assert.equal(await index.page.locator('h1').innerText(), 'web@release-0.1.0 ok');
      assert.ok(index.requests.every((u) => u.startsWith(pathToFileURL(join(out, 'site')).href)), `only the site's own pages: ${index.requests.join(', ')}`);
      assert.deepEqual(index.errors, []);
      t.diagnostic(`screenshots: ${shots}`);
    } finally {
      await browser.close();
    }
  });
});
