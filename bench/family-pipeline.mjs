#!/usr/bin/env node
// Issue 19 figures: a three-image family (base from the Debian archive; web and worker on
// base@release-0.1.0; one-task playbooks, qcow2) built
//   1. as the GitLab pipeline `kiln plan --emit gitlab --cache oci://…` writes, run by gitlab-ci-local
//      (shell executor, --shell-isolation: every job in its own copy of the checkout, so its own empty
//      cache; web and worker side by side), with a docker-registry on 127.0.0.1 as store and cache;
//   2. the same pipeline again, no change: every runner empty, every step from the registry;
//   3. one after another on one machine with one local cache (what a single build host does), no
//      registry cache, releasing to a second prefix of the same registry.
// Appends a section to bench/results.md. Usage (root, host and test tools installed):
//   node bench/family-pipeline.mjs
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const kiln = join(root, 'bin/kiln.js');
const gcl = join(root, 'node_modules/.bin/gitlab-ci-local');
const work = '/var/tmp/kiln-bench/family-pipeline';
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

const port = await new Promise((res) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
mkdirSync(join(work, 'registry'));
writeFileSync(join(work, 'registry.yml'), `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(work, 'registry')}\nhttp:\n  addr: 127.0.0.1:${port}\n`);
const registry = spawn('/usr/bin/docker-registry', ['serve', join(work, 'registry.yml')], { stdio: 'ignore' });
process.on('exit', () => registry.kill());
for (let i = 0; ; i++) {
  try { if ((await fetch(`http://127.0.0.1:${port}/v2/`)).ok) break; } catch { /* not yet */ }
  if (i > 100) throw new Error('docker-registry did not start');
  await new Promise((r) => setTimeout(r, 100));
}

const git = (dir, ...a) => execFileSync('git', ['-C', dir, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a], { encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_DATE: '2026-11-20T12:00:00Z', GIT_COMMITTER_DATE: '2026-11-20T12:00:00Z' } });

function family(dir, store) {
  const img = (name, source) => {
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'kiln.yaml'), `name: ${name}\n${source}provision:\n  playbook: playbook.yml\ndisk:\n  size: 2GiB\n  hostname: ${name}\nformats: [qcow2]\nrelease:\n  store: ${store}\n`);
    writeFileSync(join(dir, name, 'playbook.yml'), `- name: ${name}\n  hosts: all\n  gather_facts: false\n  tasks:\n    - name: Mark ${name}\n      ansible.builtin.copy:\n        dest: /etc/${name}-role\n        content: "${name}\\n"\n        mode: "0644"\n`);
  };
  img('base', 'source:\n  debian:\n    suite: trixie\n');
  for (const n of ['web', 'worker']) img(n, `source:\n  release:\n    ref: base@release-0.1.0\n    store: ${store}\n    format: qcow2\n`);
  writeFileSync(join(dir, '.gitignore'), '.kiln/\n.kiln-ci/\n.gitlab-ci-local/\n');
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'add', '-A');
  git(dir, 'commit', '-qm', 'family');
  git(dir, 'tag', 'release-0.1.0');
}

const src = join(work, 'src');
family(src, `oci://127.0.0.1:${port}/pipeline`);
git(work, 'clone', '-q', '--bare', src, join(work, 'remote.git'));
const checkout = join(work, 'checkout');
git(work, 'clone', '-q', join(work, 'remote.git'), checkout);
execFileSync(process.execPath, [kiln, 'plan', '.', '--emit', 'gitlab', '--cache', `oci://127.0.0.1:${port}/ci`, '--out', '.kiln-ci/pipeline.yml'], { cwd: checkout, stdio: 'pipe' });

function pipeline(label) {
  const env = { ...process.env };
  delete env.KILN_CACHE_DIR;
  const t0 = Date.now();
  const r = spawnSync(gcl, ['--file', '.kiln-ci/pipeline.yml', '--shell-isolation', '--no-color', '--variable', `KILN=${process.execPath} ${kiln}`], { cwd: checkout, env, encoding: 'utf8', maxBuffer: 256 << 20 });
  const wall = (Date.now() - t0) / 1000;
  writeFileSync(join(work, `${label}.log`), r.stdout + r.stderr);
  if (r.status !== 0) { console.error(r.stdout.slice(-5000)); process.exit(1); }
  let pulled = 0;
  let pushed = 0;
  for (const m of (r.stdout + r.stderr).matchAll(/cache oci:\/\/\S+: (\d+) from it.*?; (\d+) pushed/g)) { pulled += Number(m[1]); pushed += Number(m[2]); }
  console.error(`${label}: ${wall.toFixed(1)} s (${pulled} entries from the registry, ${pushed} pushed)`);
  return { wall, pulled, pushed };
}

const first = pipeline('pipeline-1');
const second = pipeline('pipeline-2');

// One after another, one machine, one local cache, no registry cache.
const seqSrc = join(work, 'sequential');
family(seqSrc, `oci://127.0.0.1:${port}/sequential`);
const seqCache = join(work, 'sequential-cache');
const t0 = Date.now();
for (const name of ['base', 'web', 'worker']) {
  const r = spawnSync(process.execPath, [kiln, 'build'], { cwd: join(seqSrc, name), env: { ...process.env, KILN_CACHE_DIR: seqCache, KILN_CACHE_REMOTE: '' }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) { console.error(r.stderr.slice(-5000)); process.exit(1); }
}
const sequential = (Date.now() - t0) / 1000;
console.error(`sequential: ${sequential.toFixed(1)} s`);

const host = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? '?';
appendFileSync(join(root, 'bench/results.md'), `
## A family as a CI pipeline (issue 19), ${new Date().toISOString().slice(0, 10)}

\`node bench/family-pipeline.mjs\` (${host} cores, TCG; base from the Debian archive, web and worker on it; one-task
playbooks; qcow2; docker-registry on 127.0.0.1 as the store and the shared step cache)

| run | wall time | ratio | from the registry cache |
| --- | ---: | ---: | --- |
| one after another on one machine, one local cache (base, web, worker) | ${sequential.toFixed(1)} s | 1.00 | none (no registry cache) |
| the emitted GitLab pipeline (gitlab-ci-local, every job a fresh runner with an empty cache, web and worker side by side) | ${first.wall.toFixed(1)} s | ${(first.wall / sequential).toFixed(2)} | ${first.pulled} entries pulled, ${first.pushed} pushed |
| the same pipeline again, no change (every runner empty) | ${second.wall.toFixed(1)} s | ${(second.wall / sequential).toFixed(2)} | ${second.pulled} entries pulled, ${second.pushed} pushed: ${second.pulled + second.pushed ? Math.round((100 * second.pulled) / (second.pulled + second.pushed)) : 0}% of the entries the jobs needed |
`);
console.error('appended to bench/results.md');
