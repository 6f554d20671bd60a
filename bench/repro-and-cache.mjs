#!/usr/bin/env node
// Issue 7 figures: a cold Kiln build (empty cache dir), a warm rebuild after a playbook edit, and a
// no-change rebuild, with wall times; then the competitor baselines of ../shared/bench/anchors
// (Packer 1.6.6 + Ansible from a stand-in upstream image, and mkosi 14) in the same run, and the
// ratios. Appends a section to bench/results.md.
// Usage (root, host tools installed): node bench/repro-and-cache.mjs [--skip-anchors]
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { anchors, loadavg, timed } from './anchors.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const skipAnchors = process.argv.includes('--skip-anchors');
const work = '/var/tmp/kiln-bench/repro';
const cache = join(work, 'cache');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const repo = join(work, 'repo');
cpSync(join(root, 'examples/debian-web'), repo, { recursive: true });
const DATE = '2026-11-01T12:00:00Z';
const git = (...a) => execFileSync('git', ['-C', repo, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a], { env: { ...process.env, GIT_AUTHOR_DATE: DATE, GIT_COMMITTER_DATE: DATE } });
git('init', '-q'); git('add', '-A'); git('commit', '-qm', 'bench'); git('tag', 'release-0.1.0');

function kilnBuild(label) {
  const load = loadavg();
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(root, 'bin/kiln.js'), 'build', '--json', '--no-release'], { cwd: repo, env: { ...process.env, KILN_CACHE_DIR: cache }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) { console.error(r.stderr); process.exit(1); }
  const rec = JSON.parse(r.stdout);
  const wall = (Date.now() - t0) / 1000;
  const baseFromCache = /base tree from cache/.test(r.stderr);
  console.error(`${label}: ${wall.toFixed(1)} s (base tree ${baseFromCache ? 'from cache' : 'built'})`);
  return { label, wall, rec, baseFromCache, load };
}

const runs = [];
runs.push(kilnBuild('Kiln cold build (empty cache)'));
// A playbook edit: the role's page title. The base tree must come from the cache.
const defaults = join(repo, 'roles/web/defaults/main.yml');
writeFileSync(defaults, readFileSync(defaults, 'utf8').replace('web_title: "Kiln example"', 'web_title: "Kiln example (edited)"'));
git('commit', '-qam', 'edit the playbook'); git('tag', '-f', 'release-0.1.0');
runs.push(kilnBuild('Kiln rebuild after a playbook edit'));
runs.push(kilnBuild('Kiln no-change rebuild'));
const sameAsBefore = runs[2].rec.artifacts.every((a) => a.sha256 === runs[1].rec.artifacts.find((b) => b.format === a.format)?.sha256);

const anchorRuns = [];
if (!skipAnchors) {
  if (!existsSync('/usr/bin/packer') || !existsSync('/usr/bin/mkosi')) anchorRuns.push({ ...timed('anchors install.sh (setup, not compared)', 'bash', ['./install.sh']), setup: true });
  const key = '/tmp/anchors/keys/id_ed25519';
  if (!existsSync(key)) { mkdirSync(dirname(key), { recursive: true }); execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]); }
  anchorRuns.push(timed('stand-in upstream image (build-base.sh)', 'bash', ['./build-base.sh'], { env: { ...process.env, SSH_PUBKEY: `${key}.pub` } }));
  anchorRuns.push(timed('Packer 1.6.6 + Ansible (run-packer.sh)', 'bash', ['./run-packer.sh', 'kiln-bench']));
  anchorRuns.push(timed('mkosi 14 (run-mkosi.sh, --bootable=no)', 'bash', ['./run-mkosi.sh', 'kiln-bench', '--bootable=no', '--nspawn-keep-unit']));
}

const f = (s) => `${s.toFixed(1)} s`;
let md = `\n## Reproducibility and cache: cold, playbook edit, no change; vs Packer and mkosi (${new Date().toISOString().slice(0, 10)}, \`node bench/repro-and-cache.mjs\`)\n\n`;
md += `Machine: ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, TCG only, shared with other work (load average before each run in the table). Example: examples/debian-web, formats ${runs[0].rec.artifacts.map((a) => a.format).join(', ')}, \`--no-release\`. The anchors build their own copy of the same playbook (nginx, user app, a template, enable nginx) from ${anchors}.\n\n`;
md += '| run | wall | base tree | load before |\n| --- | ---: | --- | --- |\n';
for (const r of runs) md += `| ${r.label} | ${f(r.wall)} | ${r.baseFromCache ? 'from cache' : 'mmdebstrap'} | ${r.load} |\n`;
for (const a of anchorRuns) md += `| ${a.label} | ${a.ok ? f(a.wall) : `failed after ${f(a.wall)}`} | | ${a.load} |\n`;
md += '\nKiln step times (s):\n\n';
const steps = runs[0].rec.steps.map((s) => s.name);
md += `| step | ${runs.map((r) => r.label.replace('Kiln ', '')).join(' | ')} |\n| --- | ${runs.map(() => '---:').join(' | ')} |\n`;
for (const s of steps) md += `| ${s} | ${runs.map((r) => ((r.rec.steps.find((x) => x.name === s)?.durationMs ?? 0) / 1000).toFixed(1)).join(' | ')} |\n`;
md += `\nNo-change rebuild artifacts identical to the previous build (sha256): **${sameAsBefore ? 'yes' : 'no'}**.\n`;
const packer = anchorRuns.find((a) => a.label.startsWith('Packer'));
const base = anchorRuns.find((a) => a.label.startsWith('stand-in'));
const mkosi = anchorRuns.find((a) => a.label.startsWith('mkosi'));
if (packer?.ok) {
  md += '\nRatios (competitor / Kiln, higher = Kiln faster):\n\n';
  md += `- Packer build / Kiln rebuild after a playbook edit: **${(packer.wall / runs[1].wall).toFixed(2)}**\n`;
  md += `- Packer build / Kiln no-change rebuild: **${(packer.wall / runs[2].wall).toFixed(2)}**\n`;
  if (base?.ok) md += `- (stand-in upstream + Packer) / Kiln cold build: **${((base.wall + packer.wall) / runs[0].wall).toFixed(2)}**\n`;
  if (mkosi?.ok) md += `- mkosi (not bootable, no formats) / Kiln rebuild after a playbook edit: **${(mkosi.wall / runs[1].wall).toFixed(2)}**\n`;
}
for (const a of anchorRuns.filter((x) => !x.ok)) md += `\n${a.label} failed; last lines:\n\n\`\`\`\n${a.tail}\n\`\`\`\n`;
if (skipAnchors) md += '\nAnchors not run (--skip-anchors).\n';
appendFileSync(join(root, 'bench/results.md'), md);
console.log(md);
