#!/usr/bin/env node
// Issue 2 figures: wall time of each build step for a cold build (empty cache) and a second build
// (warm cache, no change), and the artifact sizes. Appends a section to bench/results.md.
// Usage (root, host tools installed): node bench/build-times.mjs [example-dir]
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const example = resolve(process.argv[2] ?? join(root, 'examples/debian-web'));
const work = '/var/tmp/kiln-bench/build';
const cache = join(work, 'cache');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const repo = join(work, 'repo');
cpSync(example, repo, { recursive: true });
const git = (...a) => execFileSync('git', ['-C', repo, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a]);
git('init', '-q'); git('add', '-A'); git('commit', '-qm', 'bench'); git('tag', 'release-0.1.0');

function build(label) {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(root, 'bin/kiln.js'), 'build', '--json', '--no-release'], { cwd: repo, env: { ...process.env, KILN_CACHE_DIR: cache }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) { console.error(r.stderr); process.exit(1); }
  const rec = JSON.parse(r.stdout);
  return { label, wall: (Date.now() - t0) / 1000, rec };
}
const runs = [build('cold (empty cache)'), build('second build (warm cache)')];
const steps = runs[0].rec.steps.map((s) => s.name);
const load = execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).trim();
let md = `\n## Build step times (${new Date().toISOString().slice(0, 10)}, \`node bench/build-times.mjs\`)\n\n`;
md += `Machine: ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, load after: ${load}. Example: ${example.replace(root + '/', '')}.\n\n`;
md += `| step | ${runs.map((r) => r.label).join(' | ')} |\n| --- | ${runs.map(() => '---:').join(' | ')} |\n`;
for (const s of steps) md += `| ${s} | ${runs.map((r) => `${((r.rec.steps.find((x) => x.name === s)?.durationMs ?? 0) / 1000).toFixed(1)} s`).join(' | ')} |\n`;
md += `| **total (wall)** | ${runs.map((r) => `**${r.wall.toFixed(1)} s**`).join(' | ')} |\n\n`;
md += `| artifact | size | allocated on disk |\n| --- | ---: | ---: |\n`;
for (const a of runs[1].rec.artifacts) {
  const st = statSync(a.file);
  md += `| ${a.format} | ${(a.size / 2 ** 20).toFixed(1)} MiB | ${(st.blocks * 512 / 2 ** 20).toFixed(1)} MiB |\n`;
}
const same = runs[0].rec.artifacts.every((a, i) => a.sha256 === runs[1].rec.artifacts[i]?.sha256);
md += `\nCold and second build artifacts identical (sha256): **${same ? 'yes' : 'no'}**.\n`;
appendFileSync(join(root, 'bench/results.md'), md);
console.log(md);
