import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { runSteps, StepFailure, type Step } from '../../src/pipeline/runner.js';

function steps(log: string[], failAt?: string): Step<object>[] {
  return ['a', 'b', 'c'].map((name) => ({
    name, describe: name,
    async run() { log.push(`run ${name}`); if (name === failAt) throw new Error(`${name} broke`); },
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
    assert.equal(e.where.step, 'b');
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
