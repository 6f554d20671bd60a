#!/usr/bin/env node
// Issue 13's release-step figure, before and after the formats step stages artifacts into the store.
// Builds Kiln at an earlier commit (default 1cca951, the last one whose release step copied every
// artifact itself) in a git worktree, then releases the example (all 7 formats) with the two Kilns in
// turn, N times each (a new tag on an empty commit each time, so the tree, disk and formats are made
// again; one warm cache for the base and tools trees). Step times vary from run to run on this machine,
// so the runs alternate and every one is listed. Appends a section to bench/results.md.
// Usage (root, host tools installed): node bench/release-step.mjs [--before <commit>] [--runs N]
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadavg } from './anchors.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const before = arg('--before', '1cca951');
const n = Number(arg('--runs', '3'));
const work = '/var/tmp/kiln-bench/release-step';
const cache = join(work, 'cache');
const old = join(work, 'kiln-before');

if (existsSync(old)) execFileSync('git', ['-C', root, 'worktree', 'remove', '--force', old]);
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
execFileSync('git', ['-C', root, 'worktree', 'add', '-q', '--detach', old, before]);
symlinkSync(join(root, 'node_modules'), join(old, 'node_modules'));
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(old, 'tsconfig.json')], { stdio: 'inherit' });

const repo = join(work, 'example');
cpSync(join(root, 'examples/debian-web'), repo, { recursive: true });
let tick = Date.parse('2026-11-01T12:00:00Z') / 1000;
const git = (...a) => {
  const d = `@${tick++}`;
  return execFileSync('git', ['-C', repo, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a], { env: { ...process.env, GIT_AUTHOR_DATE: d, GIT_COMMITTER_DATE: d } });
};
git('init', '-q'); git('add', '-A'); git('commit', '-qm', 'bench');

let version = 0;
function release(label, kilnRoot) {
  git('commit', '-q', '--allow-empty', '-m', `run ${version}`);
  git('tag', `release-0.9.${version++}`);
  const load = loadavg();
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(kilnRoot, 'bin/kiln.js'), 'build', '--json'], { cwd: repo, env: { ...process.env, KILN_CACHE_DIR: cache, KILN_CACHE_MAX_SIZE: '8GiB' }, encoding: 'utf8', maxBuffer: 64 << 20 });
  // Each release is about 2 GB in the out directory and 2 GB in the store: removed once measured, so the runs fit on the disk.
  rmSync(join(repo, '.kiln', 'out'), { recursive: true, force: true });
  rmSync(join(repo, '.kiln', 'store'), { recursive: true, force: true });
  if (r.status !== 0) { console.error(r.stderr); process.exit(1); }
  const wall = (Date.now() - t0) / 1000;
  const rec = JSON.parse(r.stdout);
  const step = (name) => (rec.steps.find((s) => s.name === name)?.durationMs ?? 0) / 1000;
  const out = { label, wall, formats: step('formats'), release: step('release'), load };
  console.error(`${label}: ${wall.toFixed(1)} s, formats ${out.formats.toFixed(1)} s, release ${out.release.toFixed(1)} s`);
  return out;
}

// The first release fills the cache (base tree, tools tree); it is not compared.
release('warm-up', root);
const runs = [];
for (let i = 0; i < n; i++) {
  runs.push(release(`before (${before})`, old));
  runs.push(release('now', root));
}
execFileSync('git', ['-C', root, 'worktree', 'remove', '--force', old]);

const f = (s) => `${s.toFixed(1)} s`;
const mean = (label, k) => { const xs = runs.filter((r) => r.label === label).map((r) => r[k]); return xs.reduce((a, b) => a + b, 0) / xs.length; };
const labels = [`before (${before})`, 'now'];
let md = `\n## The release step: copied at release, or staged while the formats are written (${new Date().toISOString().slice(0, 10)}, \`node bench/release-step.mjs\`)\n\n`;
md += `The example (all 7 formats) released ${n} times by each Kiln, alternating, each a new tag on an empty commit (tree, disk and formats made again), one warm cache. "before" is Kiln at ${before}: the release step copies and hashes every artifact into the store. "now": the formats step copies each artifact into the store as soon as it is written, beside the conversions still running, and the release step renames.\n\n`;
md += '| run | wall | formats | release | formats + release | load before |\n| --- | ---: | ---: | ---: | ---: | --- |\n';
for (const r of runs) md += `| ${r.label} | ${f(r.wall)} | ${f(r.formats)} | ${f(r.release)} | ${f(r.formats + r.release)} | ${r.load} |\n`;
md += '\nMeans:\n\n';
for (const l of labels) md += `- ${l}: wall **${f(mean(l, 'wall'))}**, formats ${f(mean(l, 'formats'))}, release **${f(mean(l, 'release'))}**, formats + release **${f(mean(l, 'formats') + mean(l, 'release'))}**\n`;
md += `\nRelease step now / before: **${(mean('now', 'release') / mean(labels[0], 'release')).toFixed(2)}**; formats + release now / before: **${((mean('now', 'formats') + mean('now', 'release')) / (mean(labels[0], 'formats') + mean(labels[0], 'release'))).toFixed(2)}** [the release step ≤ 2 s].\n`;
appendFileSync(join(root, 'bench/results.md'), md);
console.log(md);
