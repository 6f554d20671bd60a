#!/usr/bin/env node
// Issue 14 figures: Kiln customising a vendor image (source.image) next to Packer 1.6.6 + Ansible
// building from the same upstream, in one run. Appends a section to bench/results.md.
//
// The upstream is the anchors' stand-in vendor image (../shared/bench/anchors/build-base.sh: a
// UEFI-only GPT qcow2, ESP + ext4 root), built first if missing. The playbook is the anchors' own
// (packer/playbook.yml: nginx from the archive, a user, a templated motd, /etc/release). Kiln runs:
//   1. cold: empty cache; the image pinned by sha512 (file://), read with fuse2fs (the source step is
//      "ingest": verify + extract), then the same steps as an archive build; UEFI only as the upstream;
//   2. child build on a cached parent: the playbook edited (motd), the verified image and its base
//      tree from the cache.
// Packer: run-packer.sh (boots the upstream under TCG, runs the playbook over SSH, converts formats).
// Usage (root, host tools installed): node bench/vendor-image.mjs [--skip-anchors]
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { anchors, buildUpstream, loadavg, timed } from './anchors.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const skipAnchors = process.argv.includes('--skip-anchors');
const work = '/var/tmp/kiln-bench/vendor-image';
const cache = join(work, 'cache');
const upstream = '/tmp/anchors/base/debian-12-base.qcow2';
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
// The upstream is built only when missing: its time is setup here, not part of the comparison.
const setup = existsSync(upstream) ? [] : buildUpstream();
const sha512 = execFileSync('sha512sum', [upstream], { encoding: 'utf8' }).split(' ')[0];
const size = execFileSync('qemu-img', ['info', '--output=json', upstream], { encoding: 'utf8' });
const virtualMiB = Math.ceil(JSON.parse(size)['virtual-size'] / 1048576);

const repo = join(work, 'repo');
mkdirSync(repo, { recursive: true });
cpSync(join(anchors, 'packer/templates'), join(repo, 'templates'), { recursive: true });
cpSync(join(anchors, 'packer/playbook.yml'), join(repo, 'playbook.yml'));
writeFileSync(join(repo, 'kiln.yaml'), `name: vendor-bench
source:
  image:
    url: file://${upstream}
    sha512: ${sha512}
provision:
  playbook: playbook.yml
  vars: { app_version: "1.0.0" }
disk:
  size: ${Math.max(2048, Math.ceil(virtualMiB / 1024) * 1024 + 1024)}MiB
  firmware: [uefi]
formats: [raw, qcow2, vmdk, vhd]
`);
let tick = Date.parse('2026-11-01T12:00:00Z') / 1000;
const git = (...a) => { const d = `@${tick++}`; return execFileSync('git', ['-C', repo, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a], { env: { ...process.env, GIT_AUTHOR_DATE: d, GIT_COMMITTER_DATE: d } }); };
git('init', '-q'); git('add', '-A'); git('commit', '-qm', 'bench'); git('tag', 'release-1.0.0');

function kilnBuild(label) {
  const load = loadavg();
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(root, 'bin/kiln.js'), 'build', '--json', '--no-release'], { cwd: repo, env: { ...process.env, KILN_CACHE_DIR: cache }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) { console.error(r.stderr.slice(-6000)); process.exit(1); }
  const rec = JSON.parse(r.stdout);
  const wall = (Date.now() - t0) / 1000;
  console.error(`${label}: ${wall.toFixed(1)} s`);
  return { label, wall, rec, load };
}

const runs = [kilnBuild('cold: empty cache (download + verify + ingest, tools tree, every step)')];
writeFileSync(join(repo, 'templates/motd.j2'), `${readFileSync(join(repo, 'templates/motd.j2'), 'utf8')}edited\n`);
git('commit', '-qam', 'edit the motd'); git('tag', 'release-1.0.1');
runs.push(kilnBuild('child build on the cached parent image (playbook edited)'));

const anchorRuns = [];
if (!skipAnchors) anchorRuns.push(timed('Packer 1.6.6 + Ansible from the same upstream, with conversions (run-packer.sh)', 'bash', ['./run-packer.sh', 'kiln-vendor-bench']));

const f = (s) => `${s.toFixed(1)} s`;
const step = (r, n) => (r.rec.steps.find((x) => x.name === n)?.durationMs ?? 0) / 1000;
let md = `\n## Vendor image: ingest and customise vs Packer from the same upstream (${new Date().toISOString().slice(0, 10)}, \`node bench/vendor-image.mjs\`)\n\n`;
md += `Machine: ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, TCG only. Upstream: the anchors' stand-in vendor image (${upstream}, UEFI-only GPT qcow2, ${virtualMiB} MiB virtual), pinned by sha512. Playbook: the anchors' packer/playbook.yml. Kiln formats: raw, qcow2, vmdk, vhd (Packer's run converts to the same).\n\n`;
for (const x of setup) md += `Setup (not compared): ${x.label} ${x.ok ? f(x.wall) : 'failed'}.\n\n`;
md += '| run | wall | source step (verify + ingest) | provision | load before |\n| --- | ---: | ---: | ---: | --- |\n';
for (const r of runs) md += `| Kiln ${r.label} | ${f(r.wall)} | ${f(step(r, 'source'))} | ${f(step(r, 'provision'))} | ${r.load} |\n`;
for (const x of anchorRuns) md += `| ${x.label} | ${x.ok ? f(x.wall) : `failed after ${f(x.wall)}`} | | | ${x.load} |\n`;
const packer = anchorRuns.find((x) => x.ok);
if (packer) {
  md += `\nRatios (Kiln / Packer from the same upstream): cold **${(runs[0].wall / packer.wall).toFixed(2)}**, child on a cached parent **${(runs[1].wall / packer.wall).toFixed(2)}**; ingest alone (verify + extract, cold) is **${f(step(runs[0], 'source'))}**.\n`;
}
for (const x of anchorRuns.filter((y) => !y.ok)) md += `\n${x.label} failed; last lines:\n\n\`\`\`\n${x.tail}\n\`\`\`\n`;
if (skipAnchors) md += '\nAnchors not run (--skip-anchors).\n';
appendFileSync(join(root, 'bench/results.md'), md);
console.log(md);
