import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { inventoryLine, parseHost, uniqueHosts } from '../../src/apply/hosts.js';
import { compareVersions } from '../../src/apply/version-order.js';
import { ansibleSshArgs, applyExitCode, preflightError, preflightProblems, readFindings, releaseProblem, sshReason } from '../../src/apply/index.js';
import { applyCommand } from '../../src/cli/apply.js';
import { KilnError } from '../../src/errors.js';
import { parseKeyValues } from '../../src/image/stamp.js';
import type { TaskResult } from '../../src/provision/results.js';

test('--host user@address:port gives the user, address, port and a colon-free inventory name', () => {
  assert.deepEqual(parseHost('kiln@127.0.0.1:2222'), { name: '127.0.0.1:2222', id: '127.0.0.1_2222', user: 'kiln', address: '127.0.0.1', port: 2222 });
  assert.deepEqual(parseHost('web1.example.org'), { name: 'web1.example.org:22', id: 'web1.example.org_22', user: 'root', address: 'web1.example.org', port: 22 });
  assert.equal(parseHost('admin@10.0.0.5', { port: 2200 }).port, 2200);
  assert.equal(parseHost('admin@10.0.0.5:22', { port: 2200 }).port, 22, 'an explicit port wins over --port');
  const v6 = parseHost('ops@[fd00::5]:2022');
  assert.equal(v6.address, 'fd00::5');
  assert.equal(v6.name, '[fd00::5]:2022');
  assert.doesNotMatch(v6.id, /:/);
});

test('malformed --host values and out-of-range ports are usage errors', () => {
  for (const bad of ['', 'a@b@c', 'host:port', 'host:70000', 'user@']) {
    assert.throws(() => parseHost(bad), (e: unknown) => e instanceof KilnError && e.exitCode === 2, bad);
  }
});

test('the same host twice under one name is refused; two names for one machine are not', () => {
  assert.throws(() => uniqueHosts([parseHost('a@h:1'), parseHost('b@h:1')]), /given twice/);
  assert.equal(uniqueHosts([parseHost('k@127.0.0.1:5'), parseHost('k@localhost:5')]).length, 2);
});

test('an inventory line carries the connection settings', () => {
  const line = inventoryLine(parseHost('kiln@127.0.0.1:2222'));
  assert.equal(line, '127.0.0.1_2222 ansible_host=127.0.0.1 ansible_port=2222 ansible_user=kiln ansible_python_interpreter=/usr/bin/python3');
});

test('versions compare by their numbers, so a downgrade is detected', () => {
  assert.ok(compareVersions('release-0.2.0', 'release-0.1.0')! > 0);
  assert.ok(compareVersions('release-0.9.1', 'release-0.10.0')! < 0);
  assert.equal(compareVersions('release-1.0', 'release-1.0.0'), 0);
  assert.equal(compareVersions('release-0.1.0', 'release-0.1.0'), 0);
  assert.equal(compareVersions('stable', 'release-0.1.0'), undefined);
});

test("an unreachable host is reported in ssh's own words", () => {
  assert.equal(sshReason('Data could not be sent to remote host "127.0.0.1". Make sure this host can be reached over ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n'),
    'ssh: connect to host 127.0.0.1 port 1: Connection refused');
  assert.equal(sshReason('Failed to connect to the host via ssh: kiln@h: Permission denied (publickey).'), 'kiln@h: Permission denied (publickey).');
  assert.equal(sshReason(undefined), 'no answer');
  // ssh's banner for a changed key starts with a line of @: the reason is in the words below it.
  const changed = 'Failed to connect to the host via ssh: @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\nHost key verification failed.';
  assert.equal(sshReason(changed), 'REMOTE HOST IDENTIFICATION HAS CHANGED: Host key verification failed.');
  assert.equal(sshReason('Failed to connect to the host via ssh: No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.'), 'No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.');
});

test('the preflight refuses another image, and a newer version unless --allow-downgrade', () => {
  const r = { name: 'web', version: 'release-0.1.0' };
  const at = (v: string, id = 'web') => ({ IMAGE_ID: id, IMAGE_VERSION: v });
  assert.equal(releaseProblem(at('release-0.2.0'), r, false), 'runs release-0.2.0, newer than release-0.1.0 (pass --allow-downgrade to go back)');
  assert.equal(releaseProblem(at('release-0.2.0'), r, true), undefined);
  assert.equal(releaseProblem(at('release-0.1.0'), r, false), undefined, 'the same version may be re-applied');
  assert.equal(releaseProblem(at('release-0.0.9'), r, false), undefined);
  assert.equal(releaseProblem(at('release-0.0.9', 'db'), r, true), 'runs image db, not web');
});

const usageError = (e: unknown) => e instanceof KilnError && e.exitCode === 2;

test('a --host that ssh would read as an option is refused as bad input (exit code 2)', async () => {
  for (const bad of ['-oProxyCommand=touch /tmp/kiln-pwned', '-oProxyCommand=x', 'kiln@-oProxyCommand=x', '-oProxyCommand=x@host', '-p', '-:22']) {
    assert.throws(() => parseHost(bad), (e: unknown) => usageError(e) && /may not start with "-" \(ssh would read it as an option\)/.test((e as Error).message), bad);
  }
  // Through the command line too (--host=-x is how parseArgs passes a value starting with "-"), before any store is opened.
  await assert.rejects(applyCommand.run(['web@release-0.1.0', '--host=-oProxyCommand=touch /tmp/kiln-pwned', '--store', '/nonexistent/kiln-store']), usageError);
});

test('a --host with whitespace, quotes or another inventory variable in it is refused', () => {
  for (const bad of ['web 1', 'ad min@web', 'web\tx', 'web\nweb2', 'kiln@web ansible_ssh_common_args=-oProxyCommand=x', 'us"er@web', "web'", 'web;id', 'we$b', 'web/x', '[fd00::5', '[fd00::5] ', '[::1;id]']) {
    assert.throws(() => parseHost(bad), usageError, JSON.stringify(bad));
  }
  assert.throws(() => parseHost('web\nx'), /^KilnError: --host "web\\nx": /, 'a value with a line break is shown quoted');
});

test('--port and a port in --host are whole numbers from 1 to 65535', async () => {
  for (const bad of ['web:22.5', 'web:0x16', 'web:-1', 'web:0', 'web:']) assert.throws(() => parseHost(bad), usageError, bad);
  assert.throws(() => parseHost('web', { port: 22.5 }), usageError);
  for (const port of ['22.5', '0x16', 'abc', '0', '70000', '']) {
    await assert.rejects(applyCommand.run(['web@release-0.1.0', '--host', 'web', '--port', port, '--store', '/nonexistent/kiln-store']), usageError, port);
  }
});

test("IMAGE_VERSION=\"\\\" in a host's /etc/release is a problem of that line, not an exception", () => {
  const r = parseKeyValues('IMAGE_ID=web\nIMAGE_VERSION="\\"\nIMAGE_COMMIT=abc\n');
  assert.deepEqual(r.values, { IMAGE_ID: 'web', IMAGE_COMMIT: 'abc' });
  assert.deepEqual(r.problems, ['line 2: "IMAGE_VERSION=\\"\\\\\\"" is not KEY=value, KEY=\'value\' or KEY="value"']);
  for (const bad of ['A="x', "A='x", 'A="a"b"', 'A=a b', 'A=$(id)', 'A="x"y']) assert.equal(parseKeyValues(bad).problems.length, 1, bad);
});

test('/etc/release values are read with os-release quoting', () => {
  assert.deepEqual(parseKeyValues('A=plain\nB="two words"\nC=\'$literal\'\nD="q\\"uote \\$x \\\\ \\n"\n# comment\n\nE=""\n').values,
    { A: 'plain', B: 'two words', C: '$literal', D: 'q"uote $x \\ \\n', E: '' });
});

test("one host's unreadable /etc/release is its own preflight problem; the other hosts are still checked", () => {
  const slurp = (host: string, text: string): TaskResult => ({ play: 'p', task: 'read /etc/release', host, action: 'ansible.builtin.slurp', status: 'ok', content: Buffer.from(text).toString('base64') });
  const found = readFindings([
    slurp('a_22', 'IMAGE_ID=web\nIMAGE_VERSION="\\"\n'),
    slurp('b_22', 'IMAGE_ID=web\nIMAGE_VERSION=release-0.2.0\n'),
    slurp('c_22', 'IMAGE_ID=web\nIMAGE_VERSION=release-0.0.9\n'),
    { play: 'p', task: 'read /etc/release', host: 'd_22', action: 'ansible.builtin.slurp', status: 'unreachable', msg: 'Failed to connect to the host via ssh: ssh: connect to host d port 22: Connection refused' },
  ]);
  const { current } = found;
  const problems = preflightProblems(found, { name: 'web', version: 'release-0.1.0' }, false, (id) => id.replace('_', ':'));
  assert.deepEqual(problems, [
    'a:22: /etc/release is not one Kiln wrote: line 2: "IMAGE_VERSION=\\"\\\\\\"" is not KEY=value, KEY=\'value\' or KEY="value"',
    'd:22: unreachable: ssh: connect to host d port 22: Connection refused',
    'b:22: runs release-0.2.0, newer than release-0.1.0 (pass --allow-downgrade to go back)',
  ]);
  assert.deepEqual([...current.keys()], ['b_22', 'c_22']);
});

test('ANSIBLE_SSH_ARGS quotes a known_hosts path so shlex gives it back whole; a path ssh would split is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-kh-;&|()`-'));
  const file = join(dir, 'known_hosts');
  writeFileSync(file, '');
  const args = ansibleSshArgs({ knownHosts: file, insecureHostKeys: false });
  const words = JSON.parse(execFileSync('python3', ['-c', 'import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))', args], { encoding: 'utf8' })) as string[];
  assert.deepEqual(words, ['-o', 'ControlMaster=auto', '-o', 'ControlPersist=120s', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${file}`, '-o', 'StrictHostKeyChecking=yes']);
  for (const bad of ['/tmp/known hosts', '/tmp/kh -oProxyCommand=x', '/tmp/"kh', "/tmp/'kh", '/tmp/kh\\x', '/tmp/%h', '/tmp/${HOME}']) {
    assert.throws(() => ansibleSshArgs({ knownHosts: bad, insecureHostKeys: false }), usageError, bad);
  }
  assert.throws(() => ansibleSshArgs({ knownHosts: join(dir, 'nope'), insecureHostKeys: false }), /known hosts file not found/);
  rmSync(dir, { recursive: true, force: true });
});

test('host keys: checked by default, a first contact pinned only with --accept-new, never together with --insecure-host-keys', () => {
  const words = (a: string) => JSON.parse(execFileSync('python3', ['-c', 'import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))', a], { encoding: 'utf8' })) as string[];
  assert.ok(words(ansibleSshArgs({ insecureHostKeys: false })).includes('StrictHostKeyChecking=yes'), 'the user\'s known_hosts, strictly');
  const dir = mkdtempSync(join(tmpdir(), 'kiln-kh-'));
  const file = join(dir, 'known_hosts');
  writeFileSync(file, '');
  assert.deepEqual(words(ansibleSshArgs({ knownHosts: file, acceptNew: true, insecureHostKeys: false })).slice(-4), ['-o', `UserKnownHostsFile=${file}`, '-o', 'StrictHostKeyChecking=accept-new']);
  assert.throws(() => ansibleSshArgs({ acceptNew: true, insecureHostKeys: true }), usageError);
  assert.throws(() => ansibleSshArgs({ knownHosts: join(dir, 'nope'), acceptNew: true, insecureHostKeys: false }), (e: unknown) => e instanceof KilnError && /touch/.test(e.hint ?? ''));
  rmSync(dir, { recursive: true, force: true });
});

test('exit codes CI can act on: 0 done or in sync, 1 failed, 3 drift, 4 only unreachable hosts (a changed host key among them, with its hint)', () => {
  assert.equal(applyExitCode([{ status: 'in sync' }, { status: 'in sync' }]), 0);
  assert.equal(applyExitCode([{ status: 'upgraded' }, { status: 'unchanged' }]), 0);
  assert.equal(applyExitCode([{ status: 'in sync' }, { status: 'drift' }]), 3);
  assert.equal(applyExitCode([{ status: 'drift' }, { status: 'failed' }]), 1, 'a failure wins over drift');
  const r = { name: 'web', version: 'release-0.2.0' };
  const keyChanged = preflightError(['a:22: unreachable: Host key verification failed.', 'b:22: unreachable: ssh: connect to host b port 22: Connection refused'], r);
  assert.equal(keyChanged.exitCode, 4);
  assert.match(keyChanged.hint ?? '', /--accept-new to pin its key.*ssh-keygen -R/);
  assert.equal(preflightError(['a:22: unreachable: x', 'b:22: runs release-0.3.0, newer than release-0.2.0 (pass --allow-downgrade to go back)'], r).exitCode, 1);
});
