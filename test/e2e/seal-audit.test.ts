/**
 * Issue 3 on the real image: the example audits clean; two VMs from one image are distinct working
 * machines; a playbook that leaves a secret behind fails the build with that finding.
 */
import { strict as assert } from 'node:assert';
import { createServer, type Server } from 'node:http';
import { readFileSync, writeFileSync, mkdirSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bootVm, type RunningVm } from '../../src/vm/qemu.js';
import { artifact, builtExample, exampleRepo, kiln, mountsUnder, type BuiltExample } from './fixture.js';

let built: BuiltExample;
before(async () => { built = await builtExample(); });

describe('kiln audit on the example image', () => {
  test('the raw disk and the qcow2 audit clean (exit 0, no findings)', async () => {
    const raw = await kiln(['audit', artifact(built, 'raw')], { cwd: built.dir });
    assert.equal(raw.code, 0, raw.stdout + raw.stderr);
    const q = await kiln(['audit', '--json', artifact(built, 'qcow2')], { cwd: built.dir });
    assert.equal(q.code, 0, q.stdout + q.stderr);
    assert.deepEqual(JSON.parse(q.stdout).findings ?? JSON.parse(q.stdout), []);
  });

  test('kiln seal --list names every operation with a description', async () => {
    const r = await kiln(['seal', '--list'], { cwd: built.dir });
    assert.equal(r.code, 0);
    for (const op of ['ssh-hostkeys', 'machine-id', 'net-hwaddr', 'dhcp-leases', 'cloud-init', 'waagent', 'provisioner-artifacts', 'shell-history', 'logs', 'tmp-files', 'package-cache', 'random-seed', 'backup-files', 'ssh-userdir']) {
      assert.match(r.stdout + r.stderr, new RegExp(`^\\s*${op}\\b.*\\S`, 'm'), op);
    }
  });
});

describe('two VMs from one image are distinct machines that both reach the network', () => {
  let server: Server;
  let port = 0;
  const vms: RunningVm[] = [];
  before(async () => {
    server = createServer((req, res) => { res.end(`hello ${req.socket.remoteAddress}\n`); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as { port: number }).port;
    const image = artifact(built, 'qcow2');
    // cloud-init would make new host keys for each new instance-id by itself, which would hide a
    // broken seal: told to keep and make none, the keys can only come from Kiln's first-boot unit.
    const cloudConfig = ['ssh_deletekeys: false', 'ssh_genkeytypes: []'];
    vms.push(...await Promise.all([
      bootVm({ image, firmware: 'bios', cpus: 1, mac: '52:54:00:aa:00:01', timeoutSec: 480, cloudConfig }),
      bootVm({ image, firmware: 'bios', cpus: 1, mac: '52:54:00:bb:00:02', timeoutSec: 480, cloudConfig }),
    ]));
  });
  after(async () => { await Promise.all(vms.map((v) => v.stop())); server?.close(); });

  test('each got its NIC up by DHCP with its own MAC and reaches the host over the network', async () => {
    for (const [i, mac] of ['52:54:00:aa:00:01', '52:54:00:bb:00:02'].entries()) {
      const link = (await vms[i].ssh('ip -o link show')).stdout;
      assert.match(link, new RegExp(mac), 'the NIC has the MAC the VM was given');
      assert.match((await vms[i].ssh('ip -o -4 addr show scope global')).stdout, /inet 10\.0\.2\.15\//, 'DHCP gave an address');
      const got = await vms[i].ssh(`python3 -c 'import urllib.request as u; print(u.urlopen("http://10.0.2.2:${port}/").read().decode())'`);
      assert.match(got.stdout, /^hello /);
    }
  });

  test("their SSH host keys, made by Kiln's first-boot unit, and machine-ids differ", async () => {
    for (const v of vms) {
      assert.equal((await v.ssh('systemctl show -p ActiveState --value kiln-firstboot-ssh-keys.service')).stdout.trim(), 'active', 'the first-boot unit ran');
      assert.match((await v.ssh('sudo journalctl -b -u kiln-firstboot-ssh-keys.service --no-pager -o cat')).stdout, /generating new host keys/, 'and made the keys');
    }
    const fp = await Promise.all(vms.map(async (v) => (await v.ssh('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')).stdout.split(' ')[1]));
    const ids = await Promise.all(vms.map(async (v) => (await v.ssh('cat /etc/machine-id')).stdout.trim()));
    assert.match(fp[0], /^SHA256:/);
    assert.notEqual(fp[0], fp[1]);
    assert.match(ids[0], /^[0-9a-f]{32}$/);
    assert.notEqual(ids[0], ids[1]);
  });
});

test('a playbook that leaves an AWS key in a file fails the build with that finding', async () => {
  const dir = exampleRepo('aws-key', {
    tag: 'release-0.1.0',
    edit: (d) => {
      const tasks = join(d, 'roles/web/tasks/main.yml');
      writeFileSync(tasks, readFileSync(tasks, 'utf8') + `
- name: Configure the backup client (oops, with a real-looking key)
  ansible.builtin.copy:
    dest: /etc/backup-client.env
    content: "AWS_ACCESS_KEY_ID=AKIAQWERTYUIOPASDFGH\\nAWS_SECRET_ACCESS_KEY=w8Jq2vXh5LmN0pR3sT6uY9zA1bC4dE7fG0hI2jK5\\n"
    mode: "0600"
`);
      writeFileSync(join(d, 'kiln.yaml'), readFileSync(join(d, 'kiln.yaml'), 'utf8').replace(/^formats: .*$/m, 'formats: [raw]'));
    },
  });
  const r = await kiln(['build'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr.slice(-3000));
  assert.match(r.stderr, /the audit found \d+ problem\(s\) in the image/);
  assert.match(r.stderr, /\/etc\/backup-client\.env/);
  assert.match(r.stderr, /aws/i);
  assert.deepEqual(mountsUnder(dir), []);
  const out = join(dir, '.kiln/out');
  assert.deepEqual(existsSync(out) ? readdirSync(out) : [], [], 'no artifact of a failed build');
  assert.equal(existsSync(join(dir, '.kiln/store/index.json')) && readFileSync(join(dir, '.kiln/store/index.json'), 'utf8').includes('release-0.1.0'), false, 'nothing released');
  mkdirSync(join(dir, '.kiln'), { recursive: true });
});
