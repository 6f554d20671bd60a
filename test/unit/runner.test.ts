import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { KilnError } from '../../src/errors.js';
import { runSteps, StepBug, StepFailure, type Step } from '../../src/pipeline/runner.js';

function steps(log: string[], failAt?: string, error: (name: string) => Error = (name) => new KilnError(`${name} broke`)): Step<object>[] {
  return ['a', 'b', 'c'].map((name) => ({
    name, describe: name,
    async run() { log.push(`run ${name}`); if (name === failAt) throw error(name); },
    async cleanup(_c, outcome) { log.push(`cleanup ${name} ${outcome}`); },
  }));
}

test('steps run in order and clean up in reverse after success', async () => {
  const log: string[] = [];
  const r = await runSteps(steps(log), {}, { logger: silentLogger });
  assert.deepEqual(log, ['run a', 'run b', 'run c', 'cleanup c success', 'cleanup b success', 'cleanup a success']);
  assert.deepEqual(r.steps.map((s) => s.status), ['ok', 'ok', 'ok']);
});

test('a failing step cleans up only the steps started, in reverse, and names the step', async () => {
  const log: string[] = [];
  await assert.rejects(runSteps(steps(log, 'b'), {}, { logger: silentLogger }), (e: StepFailure) => {
    assert.ok(e instanceof StepFailure);
    assert.equal(e.where.step, 'b');
    assert.deepEqual(e.steps.map((s) => s.status), ['ok', 'failed']);
    return true;
  });
  assert.deepEqual(log, ['run a', 'run b', 'cleanup b failure', 'cleanup a failure']);
});

test("a step's KilnError stays the user's error: its message, hint and exit code, located at the step", async () => {
  const usage = (name: string) => new KilnError(`${name}: bad input`, { where: { file: 'kiln.yaml', line: 3 }, hint: 'fix it', exitCode: 2 });
  await assert.rejects(runSteps(steps([], 'b', usage), {}, { logger: silentLogger }), (e: StepFailure) => {
    assert.ok(e instanceof StepFailure);
    assert.equal(e.exitCode, 2);
    assert.deepEqual(e.where, { file: 'kiln.yaml', line: 3, step: 'b' });
    assert.equal(e.format(), 'kiln.yaml:3: b: bad input\n  step: b\n  hint: fix it');
    return true;
  });
});

test("a step's plain Error stays a bug: not a KilnError, with the step's name and the original stack", async () => {
  const log: string[] = [];
  const bug = (name: string) => new TypeError(`${name} read undefined`);
  await assert.rejects(runSteps(steps(log, 'b', bug), {}, { logger: silentLogger }), (e: StepBug) => {
    assert.ok(e instanceof StepBug);
    assert.ok(!(e instanceof KilnError));
    assert.equal(e.step, 'b');
    assert.equal(e.message, 'step b: b read undefined');
    assert.match(e.stack ?? '', /TypeError: b read undefined\n\s+at /);
    assert.deepEqual(e.steps.map((s) => s.status), ['ok', 'failed']);
    return true;
  });
  assert.deepEqual(log, ['run a', 'run b', 'cleanup b failure', 'cleanup a failure']);
});

test('keep-on-error skips the cleanups so the work can be inspected', async () => {
  const log: string[] = [];
  await assert.rejects(runSteps(steps(log, 'b'), {}, { logger: silentLogger, keepOnError: true }));
  assert.deepEqual(log, ['run a', 'run b']);
});

test('an interrupt reaches the running step through its signal, and cleanups start only once it has returned', async () => {
  const log: string[] = [];
  const s: Step<object>[] = [
    { name: 'a', describe: 'a', async run() { log.push('run a'); }, async cleanup() { log.push('cleanup a'); } },
    {
      name: 'b', describe: 'b',
      async run(_c, _p, signal) {
        log.push('run b');
        setImmediate(() => process.emit('SIGINT', 'SIGINT'));
        await new Promise((r) => signal.addEventListener('abort', r));
        // Still undoing its work after the interrupt: a cleanup must not start yet.
        await new Promise((r) => setTimeout(r, 200));
        log.push('b stopped');
        throw signal.reason;
      },
      async cleanup() { log.push('cleanup b'); },
    },
    { name: 'c', describe: 'c', async run() { log.push('run c'); } },
  ];
  await assert.rejects(runSteps(s, {}, { logger: silentLogger }), (e: StepFailure) => {
    assert.match(e.message, /interrupted by SIGINT/);
    assert.deepEqual(e.steps.map((x) => x.status), ['ok', 'interrupted']);
    return true;
  });
  assert.deepEqual(log, ['run a', 'run b', 'b stopped', 'cleanup b', 'cleanup a']);
});

test('a step that completes although the interrupt came during it is recorded ok, and the next step does not start', async () => {
  const log: string[] = [];
  const s: Step<object>[] = [
    {
      name: 'release', describe: 'release',
      async run() {
        setImmediate(() => process.emit('SIGINT', 'SIGINT'));
        await new Promise((r) => setTimeout(r, 50));
        log.push('released');
      },
      async cleanup(_c, outcome) { log.push(`cleanup release ${outcome}`); },
    },
    { name: 'outputs', describe: 'outputs', async run() { log.push('run outputs'); } },
  ];
  await assert.rejects(runSteps(s, {}, { logger: silentLogger }), (e: StepFailure) => {
    assert.deepEqual(e.steps.map((x) => `${x.name} ${x.status}`), ['release ok']);
    return /interrupted by SIGINT/.test(e.message);
  });
  assert.deepEqual(log, ['released', 'cleanup release failure']);
});

/** Steps a, b (with prepare) and c: b's prepare logs its start and end, and ends when `finish` is called or its signal aborts. */
function withPrepare(log: string[], opts: { aFails?: boolean; prepareFails?: boolean; interruptInA?: boolean } = {}): { steps: Step<object>[]; finish: () => void } {
  let finish: () => void = () => undefined;
  const prepared = new Promise<void>((r) => { finish = r; });
  return {
    finish,
    steps: [
      {
        name: 'a', describe: 'a',
        async run() {
          log.push('run a');
          if (opts.interruptInA) setImmediate(() => process.emit('SIGINT', 'SIGINT'));
          await new Promise((r) => setTimeout(r, 30));
          if (opts.aFails || opts.interruptInA) throw new KilnError('a broke');
          log.push('a done');
          finish();
        },
        async cleanup(_c, outcome) { log.push(`cleanup a ${outcome}`); },
      },
      {
        name: 'b', describe: 'b',
        async prepare(_c, signal) {
          log.push('prepare b');
          await Promise.race([prepared, new Promise((r) => signal.addEventListener('abort', r))]);
          await new Promise((r) => setTimeout(r, 30));
          log.push(signal.aborted ? `prepare b stopped: ${(signal.reason as Error).message}` : 'prepare b done');
          if (opts.prepareFails) throw new KilnError('b could not prepare');
          if (signal.aborted) throw signal.reason;
        },
        async run() { log.push('run b'); },
        async cleanup(_c, outcome) { log.push(`cleanup b ${outcome}`); },
      },
      { name: 'c', describe: 'c', async run() { log.push('run c'); } },
    ],
  };
}

test("a step's prepare() begins when the step before it starts, and its run() waits for it", async () => {
  const log: string[] = [];
  const r = await runSteps(withPrepare(log).steps, {}, { logger: silentLogger });
  assert.deepEqual(log.slice(0, 2), ['run a', 'prepare b'], 'prepared while a runs');
  assert.ok(log.includes('prepare b done') && log.indexOf('prepare b done') < log.indexOf('run b'), `b's run waited for its prepare: ${log.join(', ')}`);
  assert.deepEqual(log.slice(-2), ['cleanup b success', 'cleanup a success']);
  assert.deepEqual(r.steps.map((s) => `${s.name} ${s.status}`), ['a ok', 'b ok', 'c ok']);
});

test("when the step before fails, the prepare() begun beside it is stopped and waited for before any cleanup, and the error is that step's", async () => {
  const log: string[] = [];
  await assert.rejects(runSteps(withPrepare(log, { aFails: true }).steps, {}, { logger: silentLogger }), (e: StepFailure) => {
    assert.equal(e.where.step, 'a');
    assert.deepEqual(e.steps.map((s) => `${s.name} ${s.status}`), ['a failed']);
    return true;
  });
  assert.deepEqual(log, ['run a', 'prepare b', 'prepare b stopped: stopped: the step before failed', 'cleanup b failure', 'cleanup a failure']);
});

test("a prepare() that fails is its step's failure, reported at its turn, after the step before completed", async () => {
  const log: string[] = [];
  await assert.rejects(runSteps(withPrepare(log, { prepareFails: true }).steps, {}, { logger: silentLogger }), (e: StepFailure) => {
    assert.equal(e.where.step, 'b');
    assert.match(e.message, /b could not prepare/);
    assert.deepEqual(e.steps.map((s) => `${s.name} ${s.status}`), ['a ok', 'b failed']);
    return true;
  });
  assert.ok(!log.includes('run b') && !log.includes('run c'), log.join(', '));
  assert.deepEqual(log.slice(-2), ['cleanup b failure', 'cleanup a failure']);
});

test('an interrupt stops the prepare() begun beside the running step too, and cleanups wait for both', async () => {
  const log: string[] = [];
  await assert.rejects(runSteps(withPrepare(log, { interruptInA: true }).steps, {}, { logger: silentLogger }), (e: StepFailure) => {
    assert.match(e.message, /interrupted by SIGINT/);
    return true;
  });
  assert.deepEqual(log, ['run a', 'prepare b', 'prepare b stopped: interrupted by SIGINT', 'cleanup b failure', 'cleanup a failure']);
});

test('checkPlan refuses a step begun early (prepare) that needs or uses what the step beside it provides', async () => {
  const { checkPlan, stepsOver } = await import('../../src/pipeline/plan.js');
  const define = stepsOver<object, { x?: number; y?: number }>();
  const a = define({ name: 'a', describe: 'a', provides: ['x'], async run(c) { c.x = 1; } });
  const b = define({ name: 'b', describe: 'b', uses: ['x'], provides: ['y'], async prepare() { /* begun early */ }, async run(c) { c.y = 2; } });
  assert.throws(() => checkPlan([a, b]), /step b begins while a runs \(prepare\), so it cannot need or use x, which a provides/);
  const b2 = define({ name: 'b', describe: 'b', provides: ['y'], async prepare() { /* begun early */ }, async run(c) { c.y = 2; } });
  assert.doesNotThrow(() => checkPlan([a, b2]));
});
