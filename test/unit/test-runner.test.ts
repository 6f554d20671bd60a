import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

// scripts/test.mjs (npm test) run over a small tree of stand-in test files, as in a checkout's dist/.
const script = new URL('../../../scripts/test.mjs', import.meta.url).pathname;
const base = mkdtempSync(join(tmpdir(), 'kiln-test-runner-'));
after(() => rmSync(base, { recursive: true, force: true }));

function tmp(dir: string): string {
  mkdirSync(join(dir, 'tmp'));
  return join(dir, 'tmp');
}

const PASS = "import { test } from 'node:test';\ntest('passes', () => {});\n";
const SKIP = "import { test } from 'node:test';\ntest('passes', () => {});\ntest('is skipped', { skip: 'no tool' }, () => {});\n";
const TODO = "import { test } from 'node:test';\ntest('later', { todo: true }, () => {});\n";

function run(files: Record<string, string>, env: Record<string, string> = {}): { status: number | null; out: string } {
  const dir = mkdtempSync(join(base, 'tree-'));
  for (const d of ['dist/test/unit', 'dist/test/e2e', 'dist/test/pipeline']) mkdirSync(join(dir, d), { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, 'dist/test', name), text);
  // Not the outer run's context: NODE_TEST_CONTEXT would make the inner runner report to this one.
  const { NODE_TEST_CONTEXT: _, CI: __, KILN_TEST_ONLY: ___, ...outer } = process.env;
  const r = spawnSync(process.execPath, [script], {
    // TMPDIR: where the inner runner itself would put scratch; the files it runs get the run's own.
    cwd: dir, encoding: 'utf8', env: { ...outer, TMPDIR: tmp(dir), KILN_E2E_DIR: join(dir, 'e2e-scratch'), KILN_E2E_RUN: 'run-1', ...env },
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('unit and end-to-end files that pass: exit 0 with the totals', () => {
  const r = run({ 'unit/a.test.js': PASS, 'e2e/b.test.js': PASS }, { CI: '1' });
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /summary \(2 files\):\n {2}tests 2\n/);
  assert.doesNotMatch(r.out, /FAILED/);
});

test('under CI a skipped or todo test fails the run, saying so in the summary', () => {
  for (const text of [SKIP, TODO]) {
    const r = run({ 'unit/a.test.js': text, 'e2e/b.test.js': PASS }, { CI: 'true' });
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /FAILED: \d skipped and \d todo tests: not allowed under CI/);
  }
});

test('outside CI a skipped test passes with a note that CI would fail', () => {
  const r = run({ 'unit/a.test.js': SKIP, 'e2e/b.test.js': PASS });
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /note: 1 tests skipped or todo; under CI that fails the run/);
});

test('no end-to-end files fails, in CI and out of it, unless KILN_TEST_ONLY=unit outside CI', () => {
  for (const env of [{ CI: '1' }, {}] as Record<string, string>[]) {
    const r = run({ 'unit/a.test.js': PASS }, env);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /FAILED: no end-to-end test files in dist\/test\/e2e/);
  }
  assert.equal(run({ 'unit/a.test.js': PASS }, { KILN_TEST_ONLY: 'unit' }).status, 0);
  const ci = run({ 'unit/a.test.js': PASS }, { KILN_TEST_ONLY: 'unit', CI: '1' });
  assert.equal(ci.status, 2);
  assert.match(ci.out, /KILN_TEST_ONLY is not allowed in CI/);
});

test('no unit files fails too, and a failing test fails the run', () => {
  assert.match(run({ 'e2e/b.test.js': PASS }).out, /FAILED: no unit test files in dist\/test\/unit/);
  const r = run({ 'unit/a.test.js': "import { test } from 'node:test';\ntest('fails', () => { throw new Error('no'); });\n", 'e2e/b.test.js': PASS });
  assert.equal(r.status, 1);
  assert.match(r.out, /FAILED: tests failed/);
});

test('end-to-end files run two at a time, longest first, then the whole-machine checkers alone; test/pipeline is not run', () => {
  const spans = join(base, `spans-${process.pid}`);
  // Each file appends its start and end (ms) to one file, holding for 1.5 s: enough to overlap when run together.
  const timed = (name: string) => `import { appendFileSync } from 'node:fs';\nimport { test } from 'node:test';\n`
    + `test('${name}', async () => { appendFileSync(${JSON.stringify(spans)}, '${name} start ' + Date.now() + '\\n'); await new Promise((r) => setTimeout(r, 1500)); appendFileSync(${JSON.stringify(spans)}, '${name} end ' + Date.now() + '\\n'); });\n`;
  const r = run({ 'unit/a.test.js': PASS, 'e2e/apply.test.js': timed('apply'), 'e2e/aws-publish.test.js': timed('aws-publish'), 'e2e/reproducible.test.js': timed('reproducible'), 'pipeline/runner-image.test.js': timed('runner-image'), 'e2e/build-failures.test.js': timed('build-failures'), 'e2e/sandbox.test.js': timed('sandbox') }, { CI: '1' });
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /summary \(6 files\):\n {2}tests 6\n/);
  // Each file's spec output comes whole, after the line saying how it ended.
  assert.match(r.out, /▷ test\/e2e\/reproducible\.test\.js: passed in \d+ s\n✔ reproducible \(/);
  const at = new Map<string, number>();
  for (const l of readFileSync(spans, 'utf8').trim().split('\n')) { const [n, what, t] = l.split(' '); at.set(`${n} ${what}`, Number(t)); }
  const overlap = (a: string, b: string) => at.get(`${a} start`)! < at.get(`${b} end`)! && at.get(`${b} start`)! < at.get(`${a} end`)!;
  assert.equal(at.size, 10, `every file but the runner image's ran: ${[...at.keys()].join(', ')}`);
  assert.ok(!at.has('runner-image start'), 'test/pipeline is npm run test:pipeline, not npm test');
  // The two longest first (by their recorded times, not by name: aws-publish sorts before reproducible).
  assert.ok(overlap('apply', 'reproducible'), 'apply and reproducible ran side by side');
  assert.ok(at.get('aws-publish start')! >= Math.min(at.get('apply end')!, at.get('reproducible end')!), 'aws-publish started when a lane was free');
  for (const lone of ['build-failures', 'sandbox']) {
    for (const other of ['apply', 'aws-publish', 'reproducible', 'build-failures', 'sandbox']) if (other !== lone) assert.ok(!overlap(lone, other), `${lone} ran beside ${other}`);
    assert.ok(at.get(`${lone} start`)! >= Math.max(at.get('apply end')!, at.get('aws-publish end')!, at.get('reproducible end')!), `${lone} started after the others ended`);
  }
});

test("the files' temporary directory is the run's own: what they leave is counted, and removed with the run when it passes", () => {
  const leaves = "import { mkdtempSync, writeFileSync } from 'node:fs';\nimport { tmpdir } from 'node:os';\nimport { join } from 'node:path';\nimport { test } from 'node:test';\n"
    + "test('leaves scratch', () => { const d = mkdtempSync(join(tmpdir(), 'kiln-leak-')); writeFileSync(join(d, 'where'), tmpdir()); });\n";
  const r = run({ 'unit/a.test.js': leaves, 'e2e/b.test.js': leaves });
  assert.equal(r.status, 0, r.out);
  const runTmp = /(\S+\/e2e-scratch\/run-1\/tmp)/.exec(r.out)?.[1];
  assert.match(r.out, /2 entries the tests left in their temporary directory \S+\/e2e-scratch\/run-1\/tmp \(removed with the run's folder\)/);
  assert.ok(runTmp && !existsSync(runTmp), 'the passed run took its temporary directory with it');
});

test("a mount left in the files' temporary directory fails the run, naming it", () => {
  // A harmless tmpfs over an empty scratch directory, unmounted again here whatever the run did.
  const mounts = "import { execFileSync } from 'node:child_process';\nimport { mkdirSync, writeFileSync } from 'node:fs';\nimport { tmpdir } from 'node:os';\nimport { join } from 'node:path';\nimport { test } from 'node:test';\n"
    + "test('leaves a mount', () => { const d = join(tmpdir(), 'kiln-mount-leak'); mkdirSync(d); writeFileSync(process.env.LEAK_AT, d); execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'kiln-test-leak', d]); });\n";
  const at = join(base, `leak-${process.pid}`);
  try {
    const r = run({ 'unit/a.test.js': PASS, 'e2e/b.test.js': mounts }, { LEAK_AT: at });
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /FAILED: mounts left in the tests' temporary directory: \S+\/run-1\/tmp\/kiln-mount-leak \(mount namespace/);
  } finally {
    if (existsSync(at)) execFileSync('umount', [readFileSync(at, 'utf8')]);
  }
});
