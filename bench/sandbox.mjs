#!/usr/bin/env node
// Issue 10 figures: what the build sandbox costs. In one run, on the same machine and warm caches:
//  - the example's provision step with Kiln before the sandbox (a worktree of the last commit
//    without it: host Ansible in `unshare --mount --pid`), and with it: the host's Ansible in the
//    sandbox (the same ansible-core, so the difference is the sandbox) and the default trixie tools
//    tree (ansible-core 2.19);
//  - starting and stopping a bare sandbox, with and without slirp4netns, and running one command in it;
//  - unless --skip-anchors: Packer + Ansible's provisioning phase on the same playbook
//    (../shared/bench/anchors), as a ratio.
// Appends a section to bench/results.md. Usage (root, host tools installed):
//   node bench/sandbox.mjs [--runs N] [--skip-anchors] [--before <commit>]
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const arg = (name, def) => { const i = process.argv.indexOf(name); return i >= 0 ? process.argv[i + 1] : def; };
const runs = Number(arg('--runs', '2'));
const before = arg('--before', 'a325ea6');
const skipAnchors = process.argv.includes('--skip-anchors');
const anchors = process.env.KILN_ANCHORS ?? resolve(root, '../shared/bench/anchors');
const work = '/var/tmp/kiln-bench/sandbox';
const cache = join(work, 'cache');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

rmSync(join(work, 'repos'), { recursive: true, force: true });
mkdirSync(work, { recursive: true });

// Kiln before the sandbox: a worktree of that commit, sharing this checkout's node_modules.
const beforeDir = join(work, 'kiln-before');
if (!existsSync(join(beforeDir, 'dist/src/cli/main.js'))) {
  rmSync(beforeDir, { recursive: true, force: true });
  execFileSync('git', ['-C', root, 'worktree', 'prune']);
  execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', beforeDir, before], { stdio: 'ignore' });
  symlinkSync(join(root, 'node_modules'), join(beforeDir, 'node_modules'));
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: beforeDir });
}

function repo(name, ansible) {
  const dir = join(work, 'repos', name);
  cpSync(join(root, 'examples/debian-web'), dir, { recursive: true });
  let y = readFileSync(join(dir, 'kiln.yaml'), 'utf8').replace(/^formats: .*$/m, 'formats: [raw]');
  if (ansible) y = y.replace('  idempotence: fail', `  idempotence: fail\n  ansible: ${ansible}`);
  writeFileSync(join(dir, 'kiln.yaml'), y);
  if (name === 'before') {
    // The old Kiln's example guarded its handler; the new one needs no guard (same tasks otherwise).
    writeFileSync(join(dir, 'roles/web/handlers/main.yml'), '- name: Reload nginx\n  ansible.builtin.service: { name: nginx, state: reloaded }\n  when: not ansible_is_chroot | default(false)\n');
  }
  const git = (...a) => execFileSync('git', ['-C', dir, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a]);
  git('init', '-q'); git('add', '-A'); git('commit', '-qm', 'bench'); git('tag', 'release-0.1.0');
  return dir;
}

const variants = [
  { label: 'before the sandbox (host ansible-core, unshare --mount --pid)', kiln: join(beforeDir, 'bin/kiln.js'), dir: repo('before') },
  { label: 'sandbox, host ansible-core', kiln: join(root, 'bin/kiln.js'), dir: repo('host', 'host') },
  { label: 'sandbox, trixie tools tree (default)', kiln: join(root, 'bin/kiln.js'), dir: repo('trixie') },
];

function build(v) {
  rmSync(join(v.dir, '.kiln/out'), { recursive: true, force: true });
  const r = spawnSync(process.execPath, [v.kiln, 'build', '--json', '--no-release'], { cwd: v.dir, env: { ...process.env, KILN_CACHE_DIR: cache }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) { console.error(r.stderr.slice(-4000)); process.exit(1); }
  const rec = JSON.parse(r.stdout);
  return rec.steps.find((s) => s.name === 'provision').durationMs / 1000;
}

// Warm every cache (base tree, tools tree, apt) once, then alternate the variants.
for (const v of variants) { process.stderr.write(`warming: ${v.label}\n`); build(v); }
for (const v of variants) v.times = [];
for (let i = 0; i < runs; i++) for (const v of variants) { v.times.push(build(v)); process.stderr.write(`${v.label}: ${v.times.at(-1).toFixed(1)} s\n`); }

// The sandbox alone: start + one command + stop, ten times each.
const micro = spawnSync(process.execPath, ['--input-type=module', '-e', `
  import { Sandbox } from ${JSON.stringify(join(root, 'dist/src/sandbox/index.js'))};
  import { controllerLayout } from ${JSON.stringify(join(root, 'dist/src/sandbox/layout.js'))};
  const out = {};
  for (const network of ['none', 'outbound']) {
    const start = [], run = [], stop = [];
    for (let i = 0; i < 10; i++) {
      let t = performance.now();
      const box = await Sandbox.start({ dir: ${JSON.stringify(join(work, 'micro'))} + '-' + network + i, layout: controllerLayout('/'), network, hostname: 'bench' });
      start.push(performance.now() - t); t = performance.now();
      await box.exec(['/bin/true'], { env: { PATH: '/usr/bin:/bin' } });
      run.push(performance.now() - t); t = performance.now();
      await box.stop();
      stop.push(performance.now() - t);
    }
    const med = (xs) => xs.sort((a, b) => a - b)[5];
    out[network] = { start: med(start), run: med(run), stop: med(stop) };
  }
  console.log(JSON.stringify(out));
`], { encoding: 'utf8' });
if (micro.status !== 0) { console.error(micro.stderr); process.exit(1); }
const m = JSON.parse(micro.stdout);
rmSync(join(work, 'micro-none0'), { recursive: true, force: true });

// The anchor: Packer + Ansible provisioning the same playbook in a TCG VM (its provisioner phase).
let anchor;
if (!skipAnchors) {
  const sh = (cmd, args, env = {}) => spawnSync(cmd, args, { cwd: anchors, encoding: 'utf8', maxBuffer: 64 << 20, env: { ...process.env, ...env } });
  if (!existsSync('/usr/bin/packer')) sh('bash', ['./install.sh']);
  const key = '/tmp/anchors/keys/id_ed25519';
  if (!existsSync(key)) { mkdirSync(dirname(key), { recursive: true }); execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]); }
  // build-base.sh derives its mirror from /etc/apt/sources.list, which a deb822-only host lacks: name it.
  if (!existsSync('/tmp/anchors/base/debian-12-base.qcow2')) {
    const b = sh('bash', ['./build-base.sh'], { SSH_PUBKEY: `${key}.pub`, MIRROR: process.env.MIRROR ?? 'http://deb.debian.org/debian' });
    if (b.status !== 0) { console.error(`anchors/build-base.sh failed:\n${(b.stderr || b.stdout).slice(-2000)}`); process.exit(1); }
  }
  const r = sh('bash', ['./run-packer.sh', 'sandbox-bench']);
  const timings = existsSync('/tmp/anchors/runs/packer-sandbox-bench/timings.txt') ? readFileSync('/tmp/anchors/runs/packer-sandbox-bench/timings.txt', 'utf8') : r.stdout;
  const prov = /^phase provisioning \(ansible\): ([0-9.]+)s$/m.exec(timings);
  anchor = { provision: prov ? Number(prov[1]) : undefined, text: timings.split('\n').filter((l) => /^(phase|packer_build_total|load)/.test(l)).join('\n') };
}

const med = variants.map((v) => median(v.times));
let md = `\n## The build sandbox: provisioning before and after (${new Date().toISOString().slice(0, 10)}, \`node bench/sandbox.mjs\`)\n\n`;
md += `Machine: ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, load after: ${load()}. The example (examples/debian-web, formats [raw]), warm caches, median of ${runs} run(s) each, variants alternated. "Before" is Kiln at ${before} (a worktree).\n\n`;
md += '| provision step | median | runs |\n| --- | ---: | --- |\n';
variants.forEach((v, i) => { md += `| ${v.label} | ${med[i].toFixed(1)} s | ${v.times.map((t) => t.toFixed(1)).join(', ')} |\n`; });
md += `\nThe sandbox's cost per build (same ansible-core, sandbox minus before): **${(med[1] - med[0]).toFixed(1)} s** (the issue asks for under 3 s).\n`;
md += `The trixie tools tree (ansible-core 2.19) over the host's ansible-core in the sandbox: ${(med[2] - med[1]).toFixed(1)} s (Ansible's own speed, not the sandbox's).\n\n`;
md += '| the sandbox alone (median of 10) | no network | slirp4netns |\n| --- | ---: | ---: |\n';
for (const k of ['start', 'run', 'stop']) md += `| ${k === 'run' ? 'one command (nsenter)' : k} | ${m.none[k].toFixed(0)} ms | ${m.outbound[k].toFixed(0)} ms |\n`;
if (anchor) {
  md += `\nAnchor (one run, same machine): Packer 1.6.6 + Ansible provisioning the same playbook in a TCG VM:\n\n\`\`\`\n${anchor.text}\n\`\`\`\n`;
  if (anchor.provision) md += `\nRatio Packer provisioning phase / Kiln provision step (trixie, sandbox): **${(anchor.provision / med[2]).toFixed(2)}** (higher = Kiln faster).\n`;
} else {
  md += '\nAnchors not run (--skip-anchors).\n';
}
appendFileSync(join(root, 'bench/results.md'), md);
console.log(md);
