#!/usr/bin/env node
// Issue 13 figures: the step cache on the example (all 7 formats), side by side with Packer 1.6.6 +
// Ansible from ../shared/bench/anchors in the same run. Appends a section to bench/results.md.
//
// Kiln runs, in one fresh cache directory:
//   1. cold: empty cache (mmdebstrap base, Ansible's tools tree, every step), --no-release
//   2. no change: the same commit again, --no-release
//   3. new tag on unchanged content: an empty commit tagged release-0.1.1, released to the store (the
//      release step's time is this run's); the example's page names kiln_image_version, so its tree
//      is provisioned again (README, The step cache)
//   4. playbook edit: the role's page title, tagged release-0.1.2, --no-release
//   5. the same example with a page that does not name the version (web_version fixed): its first
//      build (base and tools cached), then
//   6. a new tag on unchanged content for it: the tree comes from the cache
// Anchors: the stand-in upstream image (build-base.sh) and Packer's build from it (run-packer.sh).
// Usage (root, host tools installed): node bench/step-cache.mjs [--skip-anchors]
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { anchors, buildUpstream, loadavg, timed } from './anchors.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const skipAnchors = process.argv.includes('--skip-anchors');
const work = '/var/tmp/kiln-bench/step-cache';
const cache = join(work, 'cache');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

function repoFrom(name, edit) {
  const repo = join(work, name);
  cpSync(join(root, 'examples/debian-web'), repo, { recursive: true });
  edit?.(repo);
  const git = gitIn(repo);
  git('init', '-q'); git('add', '-A'); git('commit', '-qm', 'bench'); git('tag', 'release-0.1.0');
  return repo;
}
let tick = Date.parse('2026-11-01T12:00:00Z') / 1000;
const gitIn = (repo) => (...a) => {
  const d = `@${tick++ * 1}`;
  return execFileSync('git', ['-C', repo, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a], { env: { ...process.env, GIT_AUTHOR_DATE: d, GIT_COMMITTER_DATE: d } });
};

function kilnBuild(label, repo, args = ['--no-release']) {
  const load = loadavg();
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(root, 'bin/kiln.js'), 'build', '--json', ...args], { cwd: repo, env: { ...process.env, KILN_CACHE_DIR: cache }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) { console.error(r.stderr); process.exit(1); }
  const rec = JSON.parse(r.stdout);
  const wall = (Date.now() - t0) / 1000;
  const hits = /cached: ([^(]*)\(/.exec(r.stderr)?.[1]?.trim() ?? 'nothing';
  console.error(`${label}: ${wall.toFixed(1)} s (cached: ${hits})`);
  return { label, wall, rec, hits, load };
}

const a = repoFrom('example');
const gitA = gitIn(a);
const runs = [];
runs.push(kilnBuild('cold: empty cache', a));
runs.push(kilnBuild('no change', a));
const same = runs[1].rec.artifacts.every((x) => x.sha256 === runs[0].rec.artifacts.find((y) => y.format === x.format)?.sha256);
gitA('commit', '-q', '--allow-empty', '-m', 'release 0.1.1'); gitA('tag', 'release-0.1.1');
runs.push(kilnBuild('new tag, unchanged content (page names the version), released', a, []));
const defaults = join(a, 'roles/web/defaults/main.yml');
writeFileSync(defaults, readFileSync(defaults, 'utf8').replace('web_title: "Kiln example"', 'web_title: "Kiln example (edited)"'));
gitA('commit', '-qam', 'edit the playbook'); gitA('tag', 'release-0.1.2');
runs.push(kilnBuild('playbook edit', a));
const b = repoFrom('example-static-page', (dir) => {
  const f = join(dir, 'roles/web/defaults/main.yml');
  writeFileSync(f, readFileSync(f, 'utf8').replace(/^web_version: .*$/m, 'web_version: "static"'));
});
const gitB = gitIn(b);
runs.push(kilnBuild('page without the version: first build (base, tools cached)', b));
gitB('commit', '-q', '--allow-empty', '-m', 'release 0.1.1'); gitB('tag', 'release-0.1.1');
runs.push(kilnBuild('page without the version: new tag, unchanged content', b));

const anchorRuns = [];
if (!skipAnchors) {
  anchorRuns.push(...buildUpstream());
  anchorRuns.push(timed('Packer 1.6.6 + Ansible from the ready base, with conversions (run-packer.sh)', 'bash', ['./run-packer.sh', 'kiln-bench']));
}

const f = (s) => `${s.toFixed(1)} s`;
const step = (r, n) => (r.rec.steps.find((x) => x.name === n)?.durationMs ?? 0) / 1000;
let md = `\n## Step cache: no change, new tag, playbook edit, cold; vs Packer (${new Date().toISOString().slice(0, 10)}, \`node bench/step-cache.mjs\`)\n\n`;
md += `Machine: ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, TCG only (load average before each run in the table). Example: examples/debian-web, formats ${runs[0].rec.artifacts.map((x) => x.format).join(', ')}. One cache directory, empty at the start. The anchors build their own copy of the same playbook from ${anchors}.\n\n`;
md += '| run | wall | cached (the cache step\'s line) | load before |\n| --- | ---: | --- | --- |\n';
for (const r of runs) md += `| Kiln ${r.label} | ${f(r.wall)} | ${r.hits} | ${r.load} |\n`;
for (const x of anchorRuns) md += `| ${x.label} | ${x.ok ? f(x.wall) : `failed after ${f(x.wall)}`} | | ${x.load} |\n`;
md += '\nKiln step times (s):\n\n';
md += `| step | ${runs.map((_, i) => `run ${i + 1}`).join(' | ')} |\n| --- | ${runs.map(() => '---:').join(' | ')} |\n`;
for (const s of runs[0].rec.steps.map((x) => x.name)) md += `| ${s} | ${runs.map((r) => step(r, s).toFixed(1)).join(' | ')} |\n`;
md += `\nNo-change rebuild artifacts identical to the cold build's (sha256): **${same ? 'yes' : 'no'}**. The release step of run 3 (a release with all 7 artifacts): **${f(step(runs[2], 'release'))}**. `
  + `Its formats step, which also copied each artifact into the store as it was written: ${f(step(runs[2], 'formats'))}, against ${f(step(runs[3], 'formats'))} and ${f(step(runs[4], 'formats'))} for the formats of runs 4 and 5 (no release, nothing copied).\n`;
const packer = anchorRuns.find((x) => x.label.startsWith('Packer'));
const base = anchorRuns.find((x) => x.label.startsWith('stand-in'));
if (packer?.ok) {
  md += '\nRatios (Kiln / competitor; the issue\'s targets in brackets):\n\n';
  md += `- no-change rebuild: **${f(runs[1].wall)}** [≤ 5 s]\n`;
  md += `- new tag on unchanged content / Packer from a ready base: example **${(runs[2].wall / packer.wall).toFixed(2)}**, page without the version **${(runs[5].wall / packer.wall).toFixed(2)}** [≤ 0.25]\n`;
  md += `- playbook edit / Packer from a ready base: **${(runs[3].wall / packer.wall).toFixed(2)}** [≤ 0.3]\n`;
  if (base?.ok) md += `- cold build (empty cache, tools tree included) / (stand-in upstream + Packer): **${(runs[0].wall / (base.wall + packer.wall)).toFixed(2)}** [≤ 0.5]\n`;
}
for (const x of anchorRuns.filter((y) => !y.ok)) md += `\n${x.label} failed; last lines:\n\n\`\`\`\n${x.tail}\n\`\`\`\n`;
if (skipAnchors) md += '\nAnchors not run (--skip-anchors).\n';
appendFileSync(join(root, 'bench/results.md'), md);
console.log(md);
