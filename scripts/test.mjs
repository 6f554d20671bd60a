#!/usr/bin/env node
// Runs the whole suite: unit tests, then the end-to-end tests (which build and boot real images).
// Unit files run two at a time; then the end-to-end files two at a time, longest first (one at a
// time they kept 1.3 of the 2 cores busy, two at a time 1.75: the suite is mostly CPU, so this buys
// minutes, not halves); last, one at a time, the files that check the whole machine for a build's
// leftovers (processes, network namespaces), which another file's build would be.
// KILN_TEST_ONLY=unit skips the end-to-end files for a quick local loop; CI never sets it.
// The run fails, besides on a failing test, when there is no unit or end-to-end file to run (unless
// KILN_TEST_ONLY=unit) and, under CI, when any test was skipped or left todo: a skip there means
// something the suite should check was not checked.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

const only = process.env.KILN_TEST_ONLY;
if (process.env.CI && only) {
  console.error('KILN_TEST_ONLY is not allowed in CI: the end-to-end tests always run there');
  process.exit(2);
}
if (only !== undefined && only !== 'unit') {
  console.error(`KILN_TEST_ONLY=${only}: the only value is "unit"`);
  process.exit(2);
}
// One run id for all files, so they share the one example build; earlier runs' scratch is removed
// (the Debian base-tree cache beside them is kept).
const e2eDir = process.env.KILN_E2E_DIR ?? '/var/tmp/kiln-e2e';
const runId = process.env.KILN_E2E_RUN ?? `run-${Date.now()}`;
if (existsSync(e2eDir)) for (const d of readdirSync(e2eDir)) if (d.startsWith('run-') && d !== runId) rmSync(join(e2eDir, d), { recursive: true, force: true });
// The step cache starts empty in every run: no output made by an earlier run (or an older Kiln) can stand in for what a test builds.
const cacheDir = process.env.KILN_CACHE_DIR ?? join(e2eDir, 'cache');
if (!process.env.KILN_E2E_RUN) rmSync(join(cacheDir, 'steps'), { recursive: true, force: true });
// What earlier runs cached beside it (base trees, upstream and parent disks: the vendor fixtures differ in
// every run, so their entries are never used again) is bounded with Kiln's own prune, least recently used
// first, to KILN_TEST_CACHE_KEEP (default 6GiB: the Debian base trees stay). Unbounded, runs on one machine
// filled its disk.
const gib = (n) => `${(n / 1024 ** 3).toFixed(1)} GiB`;
const freeBytes = () => { try { const f = statfsSync(existsSync(e2eDir) ? e2eDir : '/var/tmp'); return f.bavail * f.bsize; } catch { return NaN; } };
if (!process.env.KILN_E2E_RUN && existsSync(cacheDir) && existsSync('dist/src/pipeline/step-cache.js')) {
  const { StepCache } = await import(new URL('../dist/src/pipeline/step-cache.js', import.meta.url).href);
  const { parseSize } = await import(new URL('../dist/src/template/schema.js', import.meta.url).href);
  const { silentLogger } = await import(new URL('../dist/src/log.js', import.meta.url).href);
  const keep = process.env.KILN_TEST_CACHE_KEEP ? parseSize(process.env.KILN_TEST_CACHE_KEEP) : 6 * 1024 ** 3;
  const r = new StepCache(cacheDir, silentLogger).prune(keep);
  if (r.removed.length) console.log(`cache ${cacheDir}: removed ${r.removed.length} entries earlier runs left (${gib(r.removed.reduce((n, e) => n + e.bytes, 0))}), ${gib(r.keptBytes)} kept (KILN_TEST_CACHE_KEEP)`);
}
// A full run needs about 40 GiB under /var/tmp at its peak (the run's scratch and its cache); less fails
// builds with ENOSPC in whichever test is running, so say so first.
const NEEDED = 40 * 1024 ** 3;
const freeAtStart = freeBytes();
if (only !== 'unit' && freeAtStart < NEEDED) console.log(`WARNING: ${gib(freeAtStart)} free in ${e2eDir}; a full run needs about ${gib(NEEDED)} (KILN_E2E_DIR, KILN_CACHE_DIR move it)`);
const list = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort().map((f) => join(dir, f)) : []);
const unit = list('dist/test/unit');
// test/pipeline (a job in the runner image, 858 s alone: its podman build alone is 6.5 minutes) is not
// among them: `npm run test:pipeline` runs it. The emitted GitLab pipeline's two runs are
// test/e2e/pipeline.test.ts, in the suite.
const e2e = only === 'unit' ? [] : list('dist/test/e2e');
// Files that look for leftover sandbox processes and network namespaces anywhere on the machine: they
// run after the others, alone.
const ALONE = new Set(['build-failures.test.js', 'sandbox.test.js']);
// Seconds each end-to-end file took on a fresh machine (run alone, cold caches): the longest start
// first, so the two lanes end together. A file not listed starts last.
const SECONDS = { 'apply.test.js': 1200, 'pipeline.test.js': 640, 'reproducible.test.js': 545, 'vendor-image.test.js': 450, 'example-image.test.js': 260, 'step-cache.test.js': 150, 'aws-publish.test.js': 310, 'aws-upstream.test.js': 190, 'azure-publish.test.js': 145, 'gce-publish.test.js': 130, 'idempotence.test.js': 92, 'seal-audit.test.js': 65, 'init.test.js': 46, 'formats.test.js': 130 };
const weight = (f) => SECONDS[f.split('/').pop()] ?? 0;
const together = e2e.filter((f) => !ALONE.has(f.split('/').pop())).sort((a, b) => weight(b) - weight(a));
const alone = e2e.filter((f) => ALONE.has(f.split('/').pop()));
const files = [...unit, ...e2e];
// An empty list would pass without checking anything (a build that put no test files in dist, a moved directory).
const missingFiles = [
  ...(unit.length ? [] : ['no unit test files in dist/test/unit (expected test/unit/*.test.ts, compiled by tsc)']),
  ...(e2e.length || only === 'unit' ? [] : ['no end-to-end test files in dist/test/e2e (expected test/e2e/*.test.ts, compiled by tsc)']),
];
if (missingFiles.length) {
  console.error(`FAILED: ${missingFiles.join('; ')}`);
  process.exit(1);
}
const extra = process.argv.slice(2);
// The tests, and the kiln commands they run, get a temporary directory of this run's own (TMPDIR, which
// Node's os.tmpdir() and the host tools read): what they leave there goes with the run's folder, no mount
// may be left in it (checked at the end), and two runs on one machine never touch each other's scratch.
// (Sweeping the machine's /tmp for new kiln-* entries instead removed a concurrent run's live scratch.)
const runTmp = join(e2eDir, runId, 'tmp');
mkdirSync(runTmp, { recursive: true });
// The spec reporter for people; a TAP copy whose totals are printed again at the very end.
// The unit files run two at a time (each in its own process, with its own scratch: most of their time
// is spent waiting on child processes), under one Node test runner. The end-to-end files run two at a
// time too (they share one built image: the first file that needs it builds it under a lock,
// test/e2e/fixture.ts), but each under a runner of its own, started here in the order of SECONDS: Node's
// runner sorts the files it is given by name, which would start the longest files whenever their
// names come. Their spec output is printed whole when a file ends (two files' lines would interleave), with a line when it
// starts. Then the ALONE files, one at a time. Every group always runs, so one report shows everything.
mkdirSync(join(e2eDir, runId), { recursive: true });
const startedAt = Date.now();
const lanes = Math.max(1, Math.min(2, availableParallelism()));
const groups = [
  { files: unit, concurrency: lanes, tap: join(e2eDir, runId, 'unit.tap') },
  { files: together, concurrency: lanes, tap: join(e2eDir, runId, 'e2e.tap'), scheduled: true },
  { files: alone, concurrency: 1, tap: join(e2eDir, runId, 'e2e-alone.tap') },
].filter((g) => g.files.length);
const env = { KILN_STATE_DIR: join(e2eDir, runId, 'state'), ...process.env, KILN_E2E_RUN: runId, TMPDIR: runTmp };
const reporters = (tap) => ['--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`];
const closed = (child) => new Promise((resolve) => child.on('close', (status, signal) => resolve({ status, signal })));
/** The group's files, `lanes` at a time in the listed order, each under its own runner with its own TAP file. */
async function scheduled(g) {
  const queue = g.files.map((file, i) => ({ file, tap: `${g.tap}.${String(i).padStart(2, '0')}` }));
  g.taps = queue.map((q) => q.tap);
  const results = [];
  const lane = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const started = Date.now();
      const name = next.file.replace(/^dist\//, '');
      console.log(`▷ ${name}: started`);
      const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...reporters(next.tap), ...extra, next.file], { stdio: ['ignore', 'pipe', 'pipe'], env });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
      child.stderr.setEncoding('utf8').on('data', (d) => { out += d; });
      const res = await closed(child);
      const how = res.status === 0 ? 'passed' : res.status === null ? `killed by ${res.signal}` : `FAILED (exit ${res.status})`;
      process.stdout.write(`\n▷ ${name}: ${how} in ${((Date.now() - started) / 1000).toFixed(0)} s\n${out}`);
      results.push(res);
    }
  };
  await Promise.all(Array.from({ length: Math.min(g.concurrency, queue.length) }, lane));
  return results.find((x) => x.status !== 0) ?? { status: 0, signal: null };
}
// The least free space seen while the tests run (sampled every 5 s), for the summary: what a run needs.
let leastFree = freeAtStart;
const sampler = setInterval(() => { leastFree = Math.min(leastFree, freeBytes()); }, 5000);
const runs = [];
for (const g of groups) {
  if (g.scheduled) { runs.push(await scheduled(g)); continue; }
  g.taps = [g.tap];
  const child = spawn(process.execPath, ['--test', `--test-concurrency=${g.concurrency}`, ...reporters(g.tap), ...extra, ...g.files], { stdio: 'inherit', env });
  runs.push(await closed(child));
}
clearInterval(sampler);
const r = runs.find((x) => x.status !== 0) ?? runs[0];
// What the tests left in their temporary directory (removed with the run's folder when the run passes),
// and any mount there, in any process's mount namespace: a leak of a test or of Kiln, which fails the run.
const leftTemps = readdirSync(runTmp).length;
const { mountsUnder } = await import(new URL('../dist/test/e2e/fixture.js', import.meta.url).href);
const tmpMounts = mountsUnder(runTmp);
// The totals of every group, added up (a runner that did not finish leaves none, and the run fails).
const sums = new Map();
let finished = 0;
const taps = groups.flatMap((g) => g.taps);
for (const tap of taps) {
  const lines = existsSync(tap) ? readFileSync(tap, 'utf8').split('\n').filter((l) => /^# (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) /.test(l)) : [];
  if (lines.length) finished++;
  for (const l of lines) {
    const [, name, value] = l.split(' ');
    sums.set(name, (sums.get(name) ?? 0) + Number(value));
  }
}
const totals = finished === taps.length ? [...sums].map(([name, value]) => `# ${name} ${name === 'duration_ms' ? value.toFixed(0) : value}`) : [];
if (r.status !== 0) {
  // The end-to-end fixture logs every kiln run's stderr; show the ones that did not exit 0 (a failure
  // a test expected is among them, so this is context, not the verdict: the summary above is).
  const logs = join(e2eDir, runId, 'logs');
  const bad = existsSync(logs) ? readdirSync(logs).sort().filter((f) => !/\[e2e\] exit 0\n$/.test(readFileSync(join(logs, f), 'utf8'))) : [];
  if (bad.length) console.log(`\nkiln runs that did not exit 0 (logs in ${logs}; the last lines of each):`);
  for (const f of bad) {
    const lines = readFileSync(join(logs, f), 'utf8').trimEnd().split('\n');
    console.log(`\n== ${f}\n${lines[0]}\n${lines.slice(-15).join('\n')}`);
  }
}
const count = (name) => Number(totals.find((l) => l.startsWith(`# ${name} `))?.split(' ')[2] ?? 0);
const notRun = count('skipped') + count('todo');
const problems = [];
if (r.status !== 0) problems.push(r.status === null ? `the test runner was killed by ${r.signal}` : 'tests failed');
if (!totals.length) problems.push('no totals: the test runner did not finish');
if (tmpMounts.length) problems.push(`mounts left in the tests' temporary directory: ${tmpMounts.join('; ')}`);
if (notRun && process.env.CI) problems.push(`${count('skipped')} skipped and ${count('todo')} todo tests: not allowed under CI, where every test must run (marked ﹣ or # TODO above)`);
console.log(`\nsummary (${files.length} files):\n${totals.map((l) => `  ${l.slice(2)}`).join('\n') || '  no results (the test runner did not finish)'}`);
if (notRun && !process.env.CI) console.log(`  note: ${notRun} tests skipped or todo; under CI that fails the run`);
// Files run side by side, so their durations add up to more than the run took: the wall time too.
console.log(`  wall time: ${((Date.now() - startedAt) / 60000).toFixed(1)} min (duration_ms adds up each runner's own time)`);
if (only !== 'unit') console.log(`  disk: ${gib(freeAtStart)} free in ${e2eDir} at the start, ${gib(freeAtStart - leastFree)} used by the run at its peak`);
if (leftTemps) console.log(`  ${leftTemps} entr${leftTemps === 1 ? 'y' : 'ies'} the tests left in their temporary directory ${runTmp} (removed with the run's folder)`);
if (problems.length) console.log(`FAILED: ${problems.join('; ')}`);
if (!problems.length) rmSync(join(e2eDir, runId), { recursive: true, force: true });
process.exit(problems.length ? (r.status || 1) : 0);
