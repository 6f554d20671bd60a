/**
 * Issue 10 on real builds: a hardening role written for live hosts (sysctl now, hostnamectl,
 * iptables, a bridge, domainname, mount, modprobe, services and a restarting handler) builds without
 * guards, lands in the image and takes effect when it boots, while the build host stays as it was;
 * tasks aimed at the controller cannot write the host; a kill -9 of Kiln leaves nothing running.
 *
 * Canaries only: distinctive, harmless values (a sysctl, a firewall rule for 192.0.2.77 with a
 * comment, a bridge link, marker files, the domain name). Each is read before and after, and
 * restored if it ever changed.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bootVm, type RunningVm } from '../../src/vm/qemu.js';
import { exampleRepo, kiln, listOnDisk, mountsUnder, netNamespaces, readFromDisk, ROOT, sandboxProcesses, type BuildRecordLite } from './fixture.js';

const SECRETS = { KILN_REGISTRY_PASSWORD: 'kiln-canary-registry', KILN_SIGNING_PASSPHRASE: 'kiln-canary-passphrase', AWS_SECRET_ACCESS_KEY: 'kiln-canary-aws' };
const MARKERS = ['/etc/kiln-canary-delegated', '/etc/kiln-canary-local-action', '/etc/kiln-canary-play', '/run/kiln-canary-started'];

interface HostState { sysctl: Record<string, string>; hostname: string; domainname: string; firewall: string; links: string[]; markers: string[] }

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
}

function hostState(): HostState {
  const sysctl: Record<string, string> = {};
  for (const k of ['vm.swappiness', 'net.ipv4.tcp_keepalive_time']) sysctl[k] = sh('sysctl', ['-n', k]);
  return {
    sysctl, hostname: sh('hostname', []), domainname: sh('sysctl', ['-n', 'kernel.domainname']),
    firewall: sh('iptables', ['-S']), links: sh('ip', ['-o', 'link', 'show']).split('\n').map((l) => l.split(':')[1]?.trim()).filter(Boolean).sort(),
    markers: MARKERS.filter((m) => existsSync(m)),
  };
}

/** Puts back whatever of the host changed (it must not have), and says what that was. */
function restore(before: HostState): string[] {
  const now = hostState();
  const changed: string[] = [];
  for (const [k, v] of Object.entries(before.sysctl)) if (now.sysctl[k] !== v) { changed.push(`${k}=${now.sysctl[k]}`); sh('sysctl', ['-w', `${k}=${v}`]); }
  if (now.hostname !== before.hostname) { changed.push(`hostname ${now.hostname}`); sh('hostname', [before.hostname]); }
  if (now.domainname !== before.domainname) { changed.push(`domainname ${now.domainname}`); sh('sysctl', ['-w', `kernel.domainname=${before.domainname}`]); }
  for (const rule of now.firewall.split('\n').filter((l) => l.includes('kiln-canary') && !before.firewall.includes(l))) {
    changed.push(`firewall: ${rule}`);
    sh('iptables', rule.replace(/^-A /, '-D ').match(/"[^"]*"|\S+/g)!.map((a) => a.replace(/^"|"$/g, '')));
  }
  for (const l of now.links.filter((x) => !before.links.includes(x))) { changed.push(`link ${l}`); sh('ip', ['link', 'del', l.split('@')[0]]); }
  for (const m of now.markers.filter((x) => !before.markers.includes(x))) { changed.push(`file ${m}`); execFileSync('rm', ['-f', m]); }
  return changed;
}

function withRole(dir: string): void {
  cpSync(join(ROOT, 'test/e2e/fixtures/hardening/roles/hardening'), join(dir, 'roles/hardening'), { recursive: true });
  cpSync(join(ROOT, 'test/e2e/fixtures/hardening/playbook.yml'), join(dir, 'playbook.yml'));
  writeFileSync(join(dir, 'kiln.yaml'), readFileSync(join(dir, 'kiln.yaml'), 'utf8').replace(/^formats: .*$/m, 'formats: [raw]'));
}

describe('a hardening role written for live hosts, built in the sandbox', () => {
  let hostBefore: HostState;
  let netnsBefore: string[];
  let dir: string;
  let record: BuildRecordLite & { provision: BuildRecordLite['provision'] & { deferred?: { service: string; action: string }[]; controller?: string } };
  let raw: string;

  before(async () => {
    hostBefore = hostState();
    netnsBefore = netNamespaces();
    dir = exampleRepo('hardening', { tag: 'release-0.1.0', edit: withRole });
    const r = await kiln(['build', '--json', '--no-release'], { cwd: dir, env: SECRETS });
    assert.equal(r.code, 0, r.stderr.slice(-5000));
    record = JSON.parse(r.stdout);
    raw = record.artifacts.find((a) => a.format === 'raw')!.file;
  });
  after(() => { if (hostBefore) restore(hostBefore); });

  test('every live-host task succeeded, and the second run changed nothing', () => {
    assert.equal(record.provision.totals.failures, 0);
    const failed = record.provision.tasks.filter((t) => t.status === 'failed').map((t) => t.task);
    assert.deepEqual(failed, ['Delegated to localhost', 'A local action', "Write the controller's /etc"], 'only the controller tasks failed (ignore_errors), as they must');
    assert.deepEqual(record.provision.idempotence?.changed, []);
    assert.match(record.provision.controller ?? '', /^ansible-core 2\.19\.\S+ from the trixie tools tree/);
    const changed = new Set(record.provision.tasks.filter((t) => t.status === 'changed').map((t) => t.task.replace(/^hardening : /, '')));
    for (const t of ['Kernel parameters, now and at boot', 'The host name, with the systemd strategy (hostnamectl)', 'Drop a documentation network, now', 'A bridge link, now', '/tmp with hardening options, mounted now and in fstab', 'TCP BBR, loaded now and at boot', 'The NIS domain name, now']) {
      assert.ok(changed.has(t), `changed on the first run: ${t}`);
    }
  });

  test('service starts, restarts and reloads are deferred to first boot and recorded', () => {
    const deferred = (record.provision.deferred ?? []).map((d) => `${d.action} ${d.service}`).sort();
    assert.deepEqual(deferred, ['reload nginx', 'restart ssh', 'start kiln-canary', 'start ssh']);
  });

  test('the build host is as it was: settings, firewall, links, names, files, processes, mounts, namespaces', () => {
    assert.deepEqual(restore(hostBefore), [], 'no canary changed on the build host');
    for (const m of MARKERS) assert.equal(existsSync(m), false, `${m}: delegate_to: localhost, local_action and a hosts: localhost play cannot write the host`);
    assert.deepEqual(sandboxProcesses(), []);
    assert.deepEqual(mountsUnder(dir), []);
    assert.deepEqual(netNamespaces(), netnsBefore, 'no network namespace is left');
    assert.ok(!sh('ps', ['-eo', 'args']).includes('kiln-canary'), 'nothing of the image runs on the host');
  });

  test('the image carries every setting, and nothing of the sandbox', async () => {
    assert.equal(await readFromDisk(raw, '/etc/sysctl.d/60-kiln-hardening.conf'), 'net.ipv4.tcp_keepalive_time=7211\nvm.swappiness=37\n');
    assert.equal(await readFromDisk(raw, '/etc/hostname'), 'hardened\n');
    assert.match(await readFromDisk(raw, '/etc/fstab'), /^tmpfs \/tmp tmpfs nodev,nosuid,noexec,mode=1777 0 0$/m);
    assert.match(await readFromDisk(raw, '/etc/fstab'), /^UUID=\S+ \/ ext4 /m);
    assert.equal(await readFromDisk(raw, '/etc/modules-load.d/tcp_bbr.conf'), 'tcp_bbr\n');
    assert.equal(await readFromDisk(raw, '/etc/modprobe.d/kiln-cramfs.conf'), 'install cramfs /bin/true\n');
    assert.ok((await listOnDisk(raw, '/etc/systemd/system/multi-user.target.wants')).includes('kiln-canary.service'), 'the unit is enabled');
    assert.deepEqual((await listOnDisk(raw, '/run')).filter((n) => n !== 'lock'), [], "no /run/kiln or other sandbox leftovers");
    assert.equal((await listOnDisk(raw, '/usr/sbin')).includes('policy-rc.d'), false);
    assert.deepEqual(await listOnDisk(raw, '/tmp'), []);
  });

  describe('the image boots with the settings in effect', () => {
    let vm: RunningVm;
    before(async () => { vm = await bootVm({ image: raw, firmware: 'bios', timeoutSec: 480 }); });
    after(async () => { await vm?.stop(); });

    // (The host name is cloud-init's to set at boot, from the cloud's metadata; the image file is checked above.)
    test('sysctls, the /tmp mount, the module, the enabled unit and the deferred services', async () => {
      const out = (await vm.ssh('cat /proc/sys/vm/swappiness /proc/sys/net/ipv4/tcp_keepalive_time; findmnt -no FSTYPE,OPTIONS /tmp; grep -c "^tcp_bbr " /proc/modules; cat /run/kiln-canary-started; systemctl is-active ssh nginx')).stdout;
      const lines = out.trim().split('\n');
      assert.deepEqual(lines.slice(0, 2), ['37', '7211']);
      assert.match(lines[2], /^tmpfs\s+rw,nosuid,nodev,noexec/);
      assert.deepEqual(lines.slice(3), ['1', 'started', 'active', 'active']);
    });
  });
});

describe('kill -9 of kiln during provisioning', () => {
  test('leaves no process, mount or network namespace', async () => {
    const netnsBefore = netNamespaces();
    const dir = exampleRepo('kill-9', {
      tag: 'release-0.1.0',
      edit: (d) => {
        writeFileSync(join(d, 'roles/web/tasks/main.yml'), `- name: Take a while\n  ansible.builtin.command: sleep 600\n  changed_when: false\n  when: kiln_slow | default(false)\n\n${readFileSync(join(d, 'roles/web/tasks/main.yml'), 'utf8')}`);
        writeFileSync(join(d, 'kiln.yaml'), readFileSync(join(d, 'kiln.yaml'), 'utf8').replace(/^formats: .*$/m, 'formats: [raw]').replace('provision:\n  playbook: playbook.yml', 'provision:\n  playbook: playbook.yml\n  vars: { kiln_slow: true }'));
      },
    });
    let sent = false;
    const r = await kiln(['build'], {
      cwd: dir, timeoutMs: 600_000,
      onStderr: (c, child) => { if (!sent && /Take a while/.test(c)) { sent = true; setTimeout(() => child.kill('SIGKILL'), 1500); } },
    });
    assert.ok(sent, 'provisioning reached the slow task');
    assert.equal(r.signal, 'SIGKILL');
    let left: string[] = [];
    for (let i = 0; i < 30; i++) {
      left = sandboxProcesses();
      if (!left.length) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.deepEqual(left, [], 'the sandbox died with kiln');
    assert.doesNotMatch(sh('ps', ['-eo', 'args']), /sleep 600/);
    assert.deepEqual(mountsUnder(dir), []);
    assert.deepEqual(netNamespaces(), netnsBefore);
    assert.equal(readdirSync(join(dir, '.kiln/work')).length, 1, 'kill -9 leaves the work area\'s files (no code runs after it); the next build removes them (unit-tested)');
  });
});
