/**
 * The build sandbox on a one-binary image tree (busybox) with the host's /usr as the controller:
 * what runs inside is root there and nobody on the host; the host's files, settings, devices,
 * network and processes are out of reach; everything dies with the sandbox or with Kiln.
 * Host-safety checks use canaries only (a sysctl value, a hostname, a marker file) and compare them
 * before and after.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sandboxEnv } from '../../src/sandbox/env.js';
import { Sandbox, SANDBOX_UID_BASE } from '../../src/sandbox/index.js';
import { controllerLayout, IMAGE, imageLayout, prepareMountPoints, type SpecLine } from '../../src/sandbox/layout.js';
import { writeFacade } from '../../src/sandbox/facade.js';

const base = mkdtempSync(join(tmpdir(), 'kiln-sandbox-'));
const env = sandboxEnv();

/** A minimal image tree: busybox and its applets, the directories the sandbox mounts on. */
export function busyboxTree(dir: string): string {
  for (const d of ['bin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp', 'var/tmp', 'root']) mkdirSync(join(dir, d), { recursive: true });
  execFileSync('cp', ['/bin/busybox', join(dir, 'bin/busybox')]);
  for (const a of ['sh', 'ls', 'cat', 'id', 'mount', 'hostname', 'sysctl', 'touch', 'sed', 'tr', 'grep', 'tail', 'rm', 'printf', 'echo', 'readlink', 'sort', 'ip', 'domainname']) {
    symlinkSync('busybox', join(dir, 'bin', a));
  }
  writeFileSync(join(dir, 'etc/hostname'), 'localhost\n');
  return dir;
}

function layoutFor(tree: string, extra: SpecLine[] = []): SpecLine[] {
  const facade = join(base, 'facade');
  if (!existsSync(facade)) writeFacade(facade);
  const empty = join(base, 'empty');
  writeFileSync(empty, '');
  const image = imageLayout({ tree, facade, emptyFile: empty, binds: extra });
  prepareMountPoints(tree, image);
  return [...controllerLayout('/'), ...image];
}

function sysctl(name: string): string {
  return readFileSync(`/proc/sys/${name.replace(/\./g, '/')}`, 'utf8').trim();
}

describe('the build sandbox', () => {
  let box: Sandbox;
  let tree: string;
  const canaries = { swappiness: '', hostname: '', domainname: '' };

  before(async () => {
    tree = busyboxTree(join(base, 'tree'));
    canaries.swappiness = sysctl('vm.swappiness');
    canaries.hostname = sysctl('kernel.hostname');
    canaries.domainname = sysctl('kernel.domainname');
    box = await Sandbox.start({ dir: join(base, 'sb'), layout: layoutFor(tree), network: 'none', hostname: 'kiln-test' });
  });
  after(async () => {
    await box?.stop();
    rmSync(base, { recursive: true, force: true });
  });

  const inImage = (script: string) => box.exec(['chroot', IMAGE, '/bin/sh', '-c', script], { env, allowFailure: true });
  const inController = (script: string) => box.exec(['/bin/sh', '-c', script], { env, allowFailure: true });

  test('its root is root inside and an unprivileged uid on the host', async () => {
    const r = await inImage('id -u');
    assert.equal(r.stdout.trim(), '0');
    const status = readFileSync(`/proc/${box.pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${SANDBOX_UID_BASE}\\s`, 'm'), 'pid 1 runs as the sandbox base uid on the host');
  });

  test('files written in the image tree have their real owners on disk', async () => {
    const r = await inImage('echo hi > /etc/kiln-owned && chown 33:33 /etc/kiln-owned && ls -ln /etc/kiln-owned');
    assert.equal(r.code, 0, r.stderr);
    const st = execFileSync('stat', ['-c', '%u:%g', join(tree, 'etc/kiln-owned')], { encoding: 'utf8' }).trim();
    assert.equal(st, '33:33');
  });

  test("the controller's root is read-only and cannot be made writable", async () => {
    const r = await inController('touch /usr/kiln-canary 2>&1; mount -o remount,rw /usr 2>&1; touch /usr/kiln-canary 2>&1; echo done');
    assert.match(r.stdout, /Read-only file system/);
    assert.match(r.stdout, /mount: .*(permission denied|Operation not permitted)/i);
    assert.equal(existsSync('/usr/kiln-canary'), false);
  });

  test('/dev is a minimal private one: no disk of the host', async () => {
    for (const r of [await inImage('ls /dev'), await inController('ls /dev')]) {
      const names = r.stdout.trim().split('\n').sort();
      assert.deepEqual(names, ['fd', 'full', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero']);
    }
    const hostDisks = readdirSync('/dev').filter((d) => /^(vd|sd|nvme|xvd)/.test(d));
    if (hostDisks.length) {
      const r = await inController(`cat /dev/${hostDisks[0]} >/dev/null 2>&1 && echo read || echo refused`);
      assert.equal(r.stdout.trim(), 'refused');
    }
  });

  test("a sysctl task changes the image's copy, never the host's setting", async () => {
    const r = await inImage('sysctl -w vm.swappiness=37 && cat /proc/sys/vm/swappiness');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /37/);
    const direct = await inController('echo 37 > /proc/sys/vm/swappiness && echo written || echo refused');
    assert.match(direct.stdout, /refused/);
    assert.equal(sysctl('vm.swappiness'), canaries.swappiness);
  });

  test('hostname and domainname are the sandbox\'s own', async () => {
    const r = await inImage('hostname; cat /proc/sys/kernel/hostname; hostname kiln-canary-host && sysctl -w kernel.domainname=kiln-canary.invalid >/dev/null && hostname && cat /proc/sys/kernel/domainname');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['kiln-test', 'kiln-test', 'kiln-canary-host', 'kiln-canary.invalid']);
    assert.equal(sysctl('kernel.hostname'), canaries.hostname);
    assert.equal(sysctl('kernel.domainname'), canaries.domainname);
  });

  test('a link added inside is not on the host; without network there is only loopback', async () => {
    const r = await inImage('ip link add kilncanary1 type bridge && ip -o link | cut -d: -f2');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').map((s) => s.trim()).sort(), ['kilncanary1', 'lo']);
    assert.throws(() => execFileSync('ip', ['link', 'show', 'kilncanary1'], { stdio: 'ignore' }));
  });

  test('a mount inside stays inside', async () => {
    const r = await inImage('mount -t tmpfs -o nodev,nosuid kiln-canary /tmp && touch /tmp/in-tmpfs && echo ok');
    assert.equal(r.stdout.trim(), 'ok', r.stderr);
    assert.equal(existsSync(join(tree, 'tmp/in-tmpfs')), false, 'the file went to the tmpfs, not the tree');
    assert.doesNotMatch(readFileSync('/proc/mounts', 'utf8'), /kiln-canary/);
  });

  test("the host's processes are not visible", async () => {
    const r = await inController('ls /proc | grep -c "^[0-9]"');
    assert.ok(Number(r.stdout.trim()) < 10, `only the sandbox's few processes: ${r.stdout}`);
  });

  test('the hostnamectl facade sets the image\'s names without systemd', async () => {
    const r = await inImage('PATH=/run/kiln/facade/bin:$PATH; hostnamectl --pretty --static set-hostname web01 && hostnamectl --transient set-hostname web01 && hostnamectl --static status && hostnamectl --transient status && cat /etc/machine-info');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['web01', 'web01', 'PRETTY_HOSTNAME="web01"']);
    assert.equal(readFileSync(join(tree, 'etc/hostname'), 'utf8'), 'web01\n');
    assert.equal(sysctl('kernel.hostname'), canaries.hostname);
  });

  test('an environment variable of Kiln never reaches a command inside', async () => {
    process.env.KILN_REGISTRY_PASSWORD = 'kiln-canary-secret';
    try {
      const r = await inImage('env');
      assert.doesNotMatch(r.stdout, /kiln-canary-secret|KILN_/);
      assert.match(r.stdout, /^PATH=/m);
    } finally {
      delete process.env.KILN_REGISTRY_PASSWORD;
    }
  });

  test('stop() ends every process in it', async () => {
    const other = await Sandbox.start({ dir: join(base, 'sb-stop'), layout: controllerLayout('/'), network: 'none', hostname: 'kiln-stop' });
    const sleeper = other.exec(['/bin/sleep', '600'], { env, allowFailure: true });
    await new Promise((r) => setTimeout(r, 300));
    await other.stop();
    const r = await sleeper;
    assert.ok(r.signal || r.code !== 0, 'the command inside was ended');
    assert.equal(existsSync(`/proc/${other.pid}`), false);
  });
});

describe('the sandbox when Kiln dies', () => {
  test('kill -9 of the process that started it leaves no process behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-sandbox-kill-'));
    const script = join(dir, 'start.mjs');
    writeFileSync(script, `
      import { Sandbox } from ${JSON.stringify(new URL('../../src/sandbox/index.js', import.meta.url).pathname)};
      import { controllerLayout } from ${JSON.stringify(new URL('../../src/sandbox/layout.js', import.meta.url).pathname)};
      const box = await Sandbox.start({ dir: ${JSON.stringify(join(dir, 'sb'))}, layout: controllerLayout('/'), network: 'outbound', hostname: 'kiln-kill' });
      box.exec(['/bin/sleep', '600'], { env: { PATH: '/usr/bin:/bin' }, allowFailure: true });
      setTimeout(() => console.log('pid', box.pid), 300);
      setInterval(() => {}, 1000);
    `);
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((res) => child.stdout.on('data', (d: Buffer) => { const m = /pid (\d+)/.exec(d.toString()); if (m) res(Number(m[1])); }));
    const ns = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(ns, /^NSpid:\s+\d+\s+1$/m, 'it is pid 1 of its own PID namespace');
    const before = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    assert.match(before, /slirp4netns .* tap0/);
    child.kill('SIGKILL');
    let left = '';
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(dir) || /sleep (600|infinity)|slirp4netns .* tap0/.test(l)).join('\n');
      if (!left && !existsSync(`/proc/${pid}`)) break;
    }
    assert.equal(left, '', 'no sandbox process, sleeper or network helper survives');
    assert.equal(existsSync(`/proc/${pid}`), false);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('the sandbox network', () => {
  test('outbound connections work; the host\'s loopback services are not reachable', async () => {
    const server = createServer((_q, s) => s.end('kiln-canary-service'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    const box = await Sandbox.start({ dir: join(mkdtempSync(join(tmpdir(), 'kiln-sandbox-net-')), 'sb'), layout: controllerLayout('/'), network: 'outbound', hostname: 'kiln-net' });
    try {
      const probe = (url: string) => box.exec(['python3', '-c', `import urllib.request,sys\ntry:\n  print(urllib.request.urlopen(${JSON.stringify(url)}, timeout=10).read()[:60])\nexcept Exception as e:\n  print('refused', type(e).__name__)`], { env, allowFailure: true });
      for (const url of [`http://10.0.2.2:${port}/`, `http://127.0.0.1:${port}/`]) {
        const r = await probe(url);
        assert.match(r.stdout, /^refused/, `${url}: ${r.stdout}${r.stderr}`);
      }
      const out = await probe('http://deb.debian.org/debian/dists/bookworm/Release');
      assert.match(out.stdout, /Origin: Debian/, out.stdout + out.stderr);
    } finally {
      await box.stop();
      server.close();
    }
  });
});

describe('mount points in a hostile image tree', () => {
  test('a symlink where the sandbox mounts is refused, and nothing is written through it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-hostile-'));
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'proc'), { recursive: true });
    mkdirSync(join(tree, 'sys'));
    mkdirSync(join(dir, 'outside'));
    symlinkSync(join(dir, 'outside'), join(tree, 'run'));
    const image = imageLayout({ tree, facade: dir, emptyFile: join(dir, 'e') });
    assert.throws(() => prepareMountPoints(tree, image), /image tree's \/run is a symlink/);
    assert.deepEqual(readdirSync(join(dir, 'outside')), []);
    rmSync(dir, { recursive: true, force: true });
  });

  test('missing mount points are created inside the tree', () => {
    const tree = mkdtempSync(join(tmpdir(), 'kiln-bare-'));
    prepareMountPoints(tree, imageLayout({ tree, facade: tree, emptyFile: join(tree, 'e') }));
    for (const d of ['proc', 'sys', 'dev', 'run']) assert.ok(existsSync(join(tree, d)), d);
    rmSync(tree, { recursive: true, force: true });
  });
});

describe('host ports', () => {
  test('only the declared port of the host\'s loopback is reachable, as 127.0.0.1:PORT inside', async () => {
    const open = createServer((_q, s) => s.end('kiln-canary-declared'));
    const other = createServer((_q, s) => s.end('kiln-canary-undeclared'));
    await Promise.all([open, other].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))));
    const [p1, p2] = [open, other].map((s) => (s.address() as AddressInfo).port);
    const box = await Sandbox.start({ dir: join(mkdtempSync(join(tmpdir(), 'kiln-sandbox-ports-')), 'sb'), layout: controllerLayout('/'), network: 'none', hostPorts: [p1], hostname: 'kiln-ports' });
    try {
      const probe = (port: number) => box.exec(['python3', '-c', `import urllib.request\ntry:\n  print(urllib.request.urlopen('http://127.0.0.1:${port}/', timeout=5).read().decode())\nexcept Exception as e:\n  print('refused', type(e).__name__)`], { env, allowFailure: true });
      assert.equal((await probe(p1)).stdout.trim(), 'kiln-canary-declared');
      assert.match((await probe(p2)).stdout, /^refused/);
    } finally {
      await box.stop();
      open.close();
      other.close();
    }
  });
});
