/**
 * The example builds into a provisioned, versioned, sealed image that boots under BIOS and UEFI.
 * One build is shared by all end-to-end files (see fixture.ts).
 */
import { openStore } from '../../src/store/index.js';
import type { InTotoStatement } from '../../src/store/provenance.js';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bootVm, type RunningVm } from '../../src/vm/qemu.js';
import { artifact, builtExample, kiln, listOnDisk, mountsUnder, readFromDisk, type BuiltExample } from './fixture.js';

let built: BuiltExample;

before(async () => { built = await builtExample(); });

/** Reads a file from the ext4 root of a raw disk without booting or mounting it. */
describe('kiln build of the example', () => {
  test('records the version, the verified source, the tasks and the artifacts', () => {
    const r = built.record;
    assert.equal(r.name, 'web');
    assert.equal(r.version, 'release-0.1.0');
    assert.match(r.commit, /^[0-9a-f]{40}$/);
    assert.equal(r.sourceDateEpoch, Date.parse('2026-11-01T12:00:00Z') / 1000);
    assert.equal(r.source.verified, true);
    assert.match(r.source.inReleaseSha256, /^[0-9a-f]{64}$/);
    assert.match(r.source.signingKeyFingerprint, /^[0-9A-F]{40}$/);
    assert.ok(r.source.packages.some((p) => p.name === 'openssh-server' && p.arch === 'amd64' && p.version));
    assert.ok(r.packages.some((p) => p.name === 'nginx'), 'the final package list includes what the playbook installed');
    assert.ok(!r.source.packages.some((p) => p.name === 'nginx'), 'the base did not have nginx');
    const tasks = r.provision.tasks.map((t) => `${t.task}=${t.status}`);
    assert.ok(tasks.some((t) => /Install nginx.*=changed/.test(t)), tasks.join('\n'));
    assert.ok(tasks.includes('web : Reload nginx=ok'), 'the handler runs without a guard; nothing is started at build time');
    assert.deepEqual((r.provision as { deferred?: { action: string; service: string }[] }).deferred?.map((d) => `${d.action} ${d.service}`), ['reload nginx'], 'and the reload is recorded as deferred to first boot');
    assert.match((r.provision as { controller?: string }).controller ?? '', /^ansible-core 2\.19\.\S+ from the trixie tools tree/);
    assert.deepEqual(r.provision.idempotence?.changed, []);
    for (const a of r.artifacts) {
      assert.ok(existsSync(a.file), a.file);
      assert.equal(statSync(a.file).size, a.size);
      assert.match(a.sha256, /^[0-9a-f]{64}$/);
    }
    assert.deepEqual(r.steps.filter((s) => s.status !== 'ok' && s.status !== 'skipped').map((s) => s.name), []);
    assert.deepEqual(r.steps.filter((s) => s.status === 'skipped').map((s) => s.name), ['lock'], 'only the lock step is skipped (the example has no kiln.lock)');
    assert.deepEqual(mountsUnder(built.dir), []);
    const ps = execFileSync('ps', ['-eo', 'comm'], { encoding: 'utf8' });
    assert.doesNotMatch(ps, /^nginx$/m, 'no service from the image runs on the build host');
    assert.ok(existsSync(join(r.outDir, 'build.json')));
    assert.equal(r.release?.ref, 'web@release-0.1.0', 'a release build is released into the store');
    assert.match(r.release?.digest ?? '', /^sha256:[0-9a-f]{64}$/);
  });

  test('the release is in the store, resolvable by version, and cannot be rebuilt in place', async () => {
    const res = await kiln(['resolve', 'web@release-0.1.0', '--format', 'qcow2', '--json'], { cwd: built.dir });
    assert.equal(res.code, 0, res.stderr);
    const j = JSON.parse(res.stdout) as { artifact?: { sha256: string; location: string } };
    assert.equal(j.artifact?.sha256, built.record.artifacts.find((a) => a.format === 'qcow2')?.sha256);
    const again = await kiln(['build'], { cwd: built.dir });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /web@release-0\.1\.0 is already released .*never rebuilt in place/);
    const rel = await kiln(['releases'], { cwd: built.dir });
    assert.match(rel.stdout, /release-0\.1\.0/);
    // The provenance names every input: the repository tree, the base tree, the Ansible, the host tools.
    const store = await openStore(join(built.dir, '.kiln/store'), built.dir, { create: false });
    const e = await store.entry('web@release-0.1.0');
    const layer = e.manifest.layers.find((l) => l.mediaType === 'application/vnd.in-toto+json');
    assert.ok(layer, 'a provenance layer');
    const prov = JSON.parse((await store.backend.readBlob('web', layer)).toString('utf8')) as InTotoStatement;
    const deps = prov.predicate.buildDefinition.resolvedDependencies;
    assert.match(deps.find((d) => d.name === 'repository')?.digest.gitTree ?? '', /^[0-9a-f]{40}$/);
    assert.match(deps.find((d) => d.name === 'base-tree')?.digest.sha256 ?? '', /^[0-9a-f]{64}$/);
    const internal = prov.predicate.buildDefinition.internalParameters as { ansible?: { core?: string; controller?: string }; hostTools?: Record<string, string> };
    assert.match(internal.ansible?.core ?? '', /^2\./);
    assert.match(internal.hostTools?.mmdebstrap ?? '', /^\d/);
    assert.match(internal.hostTools?.['qemu-utils'] ?? '', /\d/);
  });

  test('the disk carries the version and no build-time identity', async () => {
    const raw = artifact(built, 'raw');
    assert.match(await readFromDisk(raw, '/etc/release'), /^IMAGE_VERSION=release-0\.1\.0$/m);
    assert.match(await readFromDisk(raw, '/etc/os-release'), /^IMAGE_VERSION="release-0\.1\.0"$/m);
    assert.match(await readFromDisk(raw, '/etc/os-release'), /^IMAGE_ID="web"$/m);
    assert.equal(await readFromDisk(raw, '/etc/machine-id'), '', 'machine-id is empty: the first boot makes one');
    assert.deepEqual((await listOnDisk(raw, '/etc/ssh')).filter((n) => n.startsWith('ssh_host_')), [], 'no SSH host keys in the image');
    assert.equal(existsSync(join(built.record.outDir, 'root')), false);
  });
});

// Two machines from the one image, booted at once with one vCPU each (TCG runs a vCPU per host core,
// so two boots take the time of one): the raw under BIOS and the qcow2 (the same disk, see formats.test.ts)
// under UEFI, each with its own MAC. Each must work, and they must be distinct machines.
describe('the example boots under BIOS and UEFI: two distinct machines from one image that reach the network', () => {
  const vms: Partial<Record<'bios' | 'uefi', RunningVm>> = {};
  const macs = { bios: '52:54:00:aa:00:01', uefi: '52:54:00:bb:00:02' } as const;
  let server: Server | undefined;
  let port = 0;
  before(async () => {
    server = createServer((req, res) => { res.end(`hello ${req.socket.remoteAddress}\n`); });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as { port: number }).port;
    // cloud-init would make new host keys for each new instance-id by itself, which would hide a
    // broken seal: told to keep and make none, the keys can only come from Kiln's first-boot unit.
    const cloudConfig = ['ssh_deletekeys: false', 'ssh_genkeytypes: []'];
    const [bios, uefi] = await Promise.allSettled([
      bootVm({ image: artifact(built, 'raw'), firmware: 'bios', cpus: 1, mac: macs.bios, timeoutSec: 480, cloudConfig }),
      bootVm({ image: artifact(built, 'qcow2'), firmware: 'uefi', cpus: 1, mac: macs.uefi, timeoutSec: 480, cloudConfig }),
    ]);
    if (bios.status === 'fulfilled') vms.bios = bios.value;
    if (uefi.status === 'fulfilled') vms.uefi = uefi.value;
    for (const r of [bios, uefi]) if (r.status === 'rejected') throw r.reason;
  });
  after(async () => { await Promise.all(Object.values(vms).map((v) => v.stop())); server?.close(); });

  for (const [firmware, format] of [['bios', 'raw'], ['uefi', 'qcow2']] as const) {
    describe(`under ${firmware.toUpperCase()} (${format})`, () => {
      let vm: RunningVm;
      before(() => { vm = vms[firmware]!; });

      test('the version is in /etc/release and os-release', async () => {
        const rel = (await vm.ssh('cat /etc/release')).stdout;
        assert.match(rel, /^IMAGE_ID=web$/m);
        assert.match(rel, /^IMAGE_VERSION=release-0\.1\.0$/m);
        assert.match((await vm.ssh('. /etc/os-release && echo "$IMAGE_ID $IMAGE_VERSION $VERSION_CODENAME"')).stdout, /^web release-0\.1\.0 trixie$/m);
      });

      test('nginx serves the version page and the user app exists', async () => {
        const page = await vm.ssh(`python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1/").read().decode())'`);
        assert.match(page.stdout, /<p id="version">release-0\.1\.0<\/p>/);
        assert.match((await vm.ssh('systemctl is-active nginx')).stdout, /^active$/m);
        assert.match((await vm.ssh('id app')).stdout, /uid=\d+\(app\)/);
      });

      test("host keys were made at first boot by Kiln's unit, with a machine-id, under the firmware asked for", async () => {
        assert.equal((await vm.ssh('systemctl show -p ActiveState --value kiln-firstboot-ssh-keys.service')).stdout.trim(), 'active', 'the first-boot unit ran');
        assert.match((await vm.ssh('sudo journalctl -b -u kiln-firstboot-ssh-keys.service --no-pager -o cat')).stdout, /generating new host keys/, 'and made the keys');
        assert.match((await vm.ssh('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')).stdout, /SHA256:\S+/);
        assert.match((await vm.ssh('cat /etc/machine-id')).stdout, /^[0-9a-f]{32}$/m);
        assert.match((await vm.ssh('test -d /sys/firmware/efi && echo uefi || echo bios')).stdout.trim(), new RegExp(`^${firmware}$`));
      });

      test("the machine's own hostname (the seed's local-hostname, not the image's) resolves locally: sudo looks up nothing in DNS", async () => {
        assert.equal((await vm.ssh('hostname')).stdout.trim(), 'kiln-vm');
        // cloud-init (Kiln's drop-in: manage_etc_hosts: localhost) added the name; the image's lines stay.
        const hosts = (await vm.ssh('cat /etc/hosts')).stdout;
        assert.match(hosts, /^127\.0\.1\.1\s+kiln-vm(\s|$)/m, hosts);
        assert.match(hosts, /^127\.0\.0\.1\s+localhost$/m, hosts);
        assert.match((await vm.ssh('getent hosts kiln-vm')).stdout, /^127\.0\.1\.1\s/);
        // Without the line, sudo printed this on every call after waiting on DNS (8 s each here).
        const sudo = await vm.ssh('sudo -n true');
        assert.doesNotMatch(sudo.stderr, /unable to resolve host/);
      });

      test('its NIC came up by DHCP with its own MAC and reaches the host over the network', async () => {
        assert.match((await vm.ssh('ip -o link show')).stdout, new RegExp(macs[firmware]), 'the NIC has the MAC the VM was given');
        assert.match((await vm.ssh('ip -o -4 addr show scope global')).stdout, /inet 10\.0\.2\.15\//, 'DHCP gave an address');
        const got = await vm.ssh(`python3 -c 'import urllib.request as u; print(u.urlopen("http://10.0.2.2:${port}/").read().decode())'`);
        assert.match(got.stdout, /^hello /);
      });
    });
  }

  test('the two machines have different SSH host keys and machine-ids', async () => {
    const both = [vms.bios!, vms.uefi!];
    const fp = await Promise.all(both.map(async (v) => (await v.ssh('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')).stdout.split(' ')[1]));
    const ids = await Promise.all(both.map(async (v) => (await v.ssh('cat /etc/machine-id')).stdout.trim()));
    assert.match(fp[0], /^SHA256:/);
    assert.notEqual(fp[0], fp[1]);
    assert.match(ids[0], /^[0-9a-f]{32}$/);
    assert.notEqual(ids[0], ids[1]);
  });

  test("vm.ssh's commands shared one SSH connection per machine, and stopping the machines ended it: no ssh process is left", async () => {
    const both = [vms.bios!, vms.uefi!];
    const sockets = both.flatMap((v) => readdirSync(v.workDir).filter((n) => n.startsWith('ssh-')).map((n) => join(v.workDir, n)));
    assert.equal(sockets.length, 2, 'each machine has its connection socket in its work dir');
    const sshOf = () => execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n').filter((l) => /\bssh\b/.test(l) && sockets.some((s) => l.includes(s)));
    assert.equal(sshOf().length, 2, 'a master each');
    await Promise.all(both.map((v) => v.stop()));
    assert.deepEqual(sshOf(), []);
  });
});
