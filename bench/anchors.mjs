// What the benchmark scripts share to run the anchors of ../shared/bench/anchors beside Kiln in one
// run: where they are, the load average recorded with each run, a timed anchor command, and the
// stand-in upstream image (build-base.sh) that Packer builds from.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const anchors = process.env.KILN_ANCHORS ?? '/work/shared/bench/anchors';

export const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

/** One anchor command, run in the anchors' directory and timed, with its last lines for a failure report. */
export function timed(label, cmd, args, opts = {}) {
  const load = loadavg();
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd: anchors, encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  const wall = (Date.now() - t0) / 1000;
  console.error(`${label}: ${wall.toFixed(1)} s, exit ${r.status}`);
  return { label, wall, ok: r.status === 0, tail: `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-5).join('\n'), load };
}

/** The Debian mirror this machine's apt uses (deb822 .sources or one-line sources.list), without -security ones. */
export function aptMirror() {
  const files = ['/etc/apt/sources.list', ...(existsSync('/etc/apt/sources.list.d') ? readdirSync('/etc/apt/sources.list.d').filter((n) => /\.(sources|list)$/.test(n)).map((n) => join('/etc/apt/sources.list.d', n)) : [])];
  for (const file of files.filter((x) => existsSync(x))) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const m = /^URIs:\s*(\S+)/.exec(line) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(https?:\S+)/.exec(line);
      if (m && !/security/.test(m[1])) return m[1];
    }
  }
  return undefined;
}

/**
 * The anchors' tools (install.sh, only when Packer is missing) and the stand-in upstream image
 * (build-base.sh, at /tmp/anchors/base/debian-12-base.qcow2), each a timed run. build-base.sh finds
 * the mirror with `sed … /etc/apt/sources.list.d/*.sources /etc/apt/sources.list` under `set -o
 * pipefail`: on a machine with deb822 sources only (this one), sed exits 2 for the missing file and
 * the script stops at once with no output. The mirror is given to it instead.
 */
export function buildUpstream() {
  const runs = [];
  if (!existsSync('/usr/bin/packer')) runs.push({ ...timed('anchors install.sh (setup, not compared)', 'bash', ['./install.sh']), setup: true });
  const key = '/tmp/anchors/keys/id_ed25519';
  if (!existsSync(key)) { mkdirSync(dirname(key), { recursive: true }); execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]); }
  const mirror = aptMirror();
  runs.push(timed('stand-in upstream image (build-base.sh)', 'bash', ['./build-base.sh'], { env: { ...process.env, SSH_PUBKEY: `${key}.pub`, ...(mirror ? { MIRROR: mirror, SECURITY_MIRROR: `${mirror.replace(/\/$/, '')}-security` } : {}) } }));
  return runs;
}

/**
 * A fresh work folder /var/tmp/kiln-bench/<name> for a cloud publishing benchmark, with a Kiln state
 * directory of its own: the store is made anew each run, and a reader that remembers an earlier run's
 * metadata would rightly refuse it as rolled back.
 */
export function publishBenchWork(name) {
  const work = join('/var/tmp/kiln-bench', name);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  process.env.KILN_STATE_DIR = join(work, 'state');
  return work;
}

/**
 * The example (examples/debian-web) released once in a fresh repository under `work`, with its own cache:
 * what the cloud publishing benchmarks upload. Returns the repository and the build record.
 */
export function releasedExample(root, work) {
  const repo = join(work, 'example');
  cpSync(join(root, 'examples/debian-web'), repo, { recursive: true });
  const git = (...a) => execFileSync('git', ['-C', repo, '-c', 'user.email=b@kiln', '-c', 'user.name=bench', ...a], { env: { ...process.env, GIT_AUTHOR_DATE: '@1793534400', GIT_COMMITTER_DATE: '@1793534400' } });
  git('init', '-q'); git('add', '-A'); git('commit', '-qm', 'bench'); git('tag', 'release-0.1.0');
  console.error('building the example release…');
  const b = spawnSync(process.execPath, [join(root, 'bin/kiln.js'), 'build', '--json'], { cwd: repo, env: { ...process.env, KILN_CACHE_DIR: join(work, 'cache') }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (b.status !== 0) { console.error(b.stderr.slice(-4000)); process.exit(1); }
  return { repo, record: JSON.parse(b.stdout) };
}
