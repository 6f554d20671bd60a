import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { checkPlan, PlanError, stepsOver, type DeclaredStep } from '../../src/pipeline/plan.js';
import { runSteps } from '../../src/pipeline/runner.js';
import { buildSteps } from '../../src/pipeline/steps/index.js';
import { LOCK_STEPS } from '../../src/pipeline/lock-resolve.js';
import { step as buildStep } from '../../src/pipeline/context.js';
import { silentLogger } from '../../src/log.js';

interface Env { log: string[] }
interface State { a?: number; b?: string; c?: boolean }
const step = stepsOver<Env, State>();

const provideA = step({ name: 'a', describe: 'sets a', provides: ['a'], async run(ctx) { ctx.a = 1; ctx.log.push('a'); } });
const needA = step({
  name: 'b', describe: 'needs a', needs: ['a'], provides: ['b'],
  // ctx.a is a number here, not number | undefined: no assertion needed.
  async run(ctx) { ctx.b = String(ctx.a + 1); ctx.log.push(`b:${ctx.b}`); },
});
const skippedA = step({ name: 'a?', describe: 'sets a sometimes', provides: ['a'], skip: () => true, async run(ctx) { ctx.a = 1; } });
const usesC = step({ name: 'u', describe: 'uses c', uses: ['c'], async run(ctx) { ctx.log.push(`c:${String(ctx.c)}`); } });

test('a plan whose needs come from earlier steps passes; one that needs a later or missing result names the step and the result', () => {
  checkPlan([provideA, needA]);
  assert.throws(() => checkPlan([needA, provideA]), (e: unknown) => e instanceof PlanError && /step b needs a, which no earlier step provides/.test(e.message));
  assert.throws(() => checkPlan([skippedA, needA]), /step b needs a, which an earlier step provides only in some builds/);
  checkPlan([usesC]);
  assert.throws(() => checkPlan([provideA, provideA]), /two steps are named a/);
  checkPlan([usesC], ['c']);
});

test("Kiln's build and kiln lock's partial pipeline pass the plan check; every step's name is its file's", async () => {
  checkPlan(buildSteps);
  // kiln lock's pipeline: no lock step (it resolves against the archive), and a last step that reads the provisioned tree.
  checkPlan([...LOCK_STEPS, buildStep({ name: 'collect', describe: 'reads the tree', needs: ['provision'], async run() {} })]);
  const names = buildSteps.map((s) => s.name);
  assert.deepEqual(names, ['version', 'preflight', 'work-area', 'lock', 'source', 'tools', 'cache', 'configure', 'provision', 'seal', 'stamp', 'disk', 'audit', 'formats', 'release', 'outputs']);
  for (const n of names) {
    const mod = (await import(`../../src/pipeline/steps/${n}.js`)) as Record<string, DeclaredStep<unknown, unknown>>;
    const camel = n.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    assert.equal(mod[`${camel}Step`]?.name, n, `src/pipeline/steps/${n}.ts exports ${camel}Step named ${n}`);
  }
  // The audit needs the disk: moved before the disk step, the plan check refuses the list.
  const i = names.indexOf('audit');
  const swapped = [...buildSteps];
  [swapped[i - 1], swapped[i]] = [swapped[i], swapped[i - 1]];
  assert.throws(() => checkPlan(swapped), /step audit needs disk, which no earlier step provides/);
});

test('while running, a step is held to its declaration: a missing need or an unprovided result is a bug, not a user error', async () => {
  const ctx = { log: [] as string[] } as Env & State;
  await runSteps([provideA, needA, usesC] as DeclaredStep<Env & State, State>[], ctx, { logger: silentLogger });
  assert.deepEqual(ctx.log, ['a', 'b:2', 'c:undefined']);
  const liar = step({ name: 'liar', describe: 'says it provides c', provides: ['c'], async run() { /* does not */ } });
  await assert.rejects(runSteps([liar], { log: [] } as Env & State, { logger: silentLogger }), /step liar declares that it provides c but did not/);
  await assert.rejects(runSteps([needA], { log: [] } as Env & State, { logger: silentLogger }), /step b needs a, which no earlier step provided/);
});
