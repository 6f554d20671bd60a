import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { BUG_EXIT, CommandError, InterruptedError, KilnError, reportError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { runSteps, type Step } from '../../src/pipeline/runner.js';

function report(e: unknown): { code: number; text: string } {
  let text = '';
  const code = reportError(e, (t) => { text += t; });
  return { code, text };
}

/** What the CLI prints and returns for what a build step throws, through the runner as in `kiln build`. */
async function throughRunner(thrown: unknown): Promise<{ code: number; text: string }> {
  const step: Step<object> = { name: 'provision', describe: 'provision', async run() { throw thrown; } };
  try {
    await runSteps([step], {}, { logger: silentLogger });
  } catch (e) {
    return report(e);
  }
  throw new Error('the step did not fail');
}

test('a KilnError is a user error: "error: file:line: message" with its hint, exit 1', () => {
  const r = report(new KilnError('unknown key "sise"', { where: { file: 'kiln.yaml', line: 4, column: 3 }, hint: 'expected one of: size, firmware' }));
  assert.equal(r.code, 1);
  assert.equal(r.text, 'error: kiln.yaml:4:3: unknown key "sise"\n  hint: expected one of: size, firmware\n');
});

test("a KilnError's own exit code is kept (2 for a command line Kiln cannot use)", () => {
  assert.equal(report(new KilnError('kiln seal: nothing to do', { exitCode: 2 })).code, 2);
  assert.equal(report(new CommandError('mke2fs -q x', 1, null, '', 'no space')).code, 1);
});

test('an interrupt exits 130 for SIGINT and 143 for SIGTERM', () => {
  assert.equal(report(new InterruptedError('SIGINT')).code, 130);
  assert.equal(report(new InterruptedError('SIGTERM')).code, 143);
});

test('any other error is a bug: shown with its stack as one to report, exit 70', () => {
  const r = report(new TypeError('cannot read properties of undefined'));
  assert.equal(r.code, BUG_EXIT);
  assert.equal(BUG_EXIT, 70);
  assert.match(r.text, /^kiln: internal error \(a bug; please report it\)\nTypeError: cannot read properties of undefined\n\s+at /);
  assert.equal(report('a thrown string').code, 70);
});

test('through the step runner a user error keeps its exit code and a bug stays a bug', async () => {
  const user = await throughRunner(new KilnError('playbook syntax error', { where: { file: 'site.yml', line: 7 }, exitCode: 2 }));
  assert.equal(user.code, 2);
  assert.equal(user.text, 'error: site.yml:7: playbook syntax error\n  step: provision\n');
  const bug = await throughRunner(new RangeError('index out of range'));
  assert.equal(bug.code, 70);
  assert.match(bug.text, /^kiln: internal error \(a bug; please report it\)\nStepBug: step provision: index out of range\nRangeError: index out of range\n\s+at /);
});

test('the host refusing an operation (no space, permissions, read-only) is the user\'s to act on, in a step or not; ENOENT stays a bug', async () => {
  const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: 'ENOSPC', syscall: 'write', path: '/var/tmp/x/disk.raw', errno: -28 });
  const direct = report(enospc);
  assert.equal(direct.code, 1);
  assert.match(direct.text, /^error: \/var\/tmp\/x\/disk\.raw: the host refused write on \/var\/tmp\/x\/disk\.raw: ENOSPC: no space left on device, write\n  hint: free some space/);
  const inStep = await throughRunner(Object.assign(new Error('EACCES: permission denied, open'), { code: 'EACCES', syscall: 'open', path: '/srv/out' }));
  assert.equal(inStep.code, 1);
  assert.match(inStep.text, /step: provision/);
  assert.match(inStep.text, /hint: check the permissions/);
  const lost = await throughRunner(Object.assign(new Error('ENOENT: no such file or directory, open'), { code: 'ENOENT', syscall: 'open', path: '/work/disk.raw' }));
  assert.equal(lost.code, 70, 'a file of its own that Kiln cannot find is a bug');
});

test('the kiln command exits 2 for an unknown command or flag, and 0 for --help', () => {
  const kiln = new URL('../../../bin/kiln.js', import.meta.url).pathname;
  const run = (...args: string[]) => spawnSync(process.execPath, [kiln, ...args], { encoding: 'utf8' });
  assert.equal(run('no-such-command').status, 2);
  const flag = run('seal', '--no-such-flag');
  assert.equal(flag.status, 2);
  assert.match(flag.stderr, /^error: kiln seal: Unknown option '--no-such-flag'/);
  assert.equal(run('--help').status, 0);
});
