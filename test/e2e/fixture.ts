/**
 * The end-to-end tests share one build of the example (a TCG boot costs ~30-40 s and a cold build
 * minutes): the first test file that needs it builds it, later files in the same `npm test` run
 * (KILN_E2E_RUN) reuse the record. The Debian base-tree cache is shared across runs.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, cpSync, createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../../src/fsio.js';
import { rootOffset } from '../../src/image/root-fs.js';
import { withLock } from '../../src/store/lock.js';

export const ROOT = resolve(new URL('../../..', import.meta.url).pathname);
export const KILN = join(ROOT, 'bin/kiln.js');
export const E2E_DIR = process.env.KILN_E2E_DIR ?? '/var/tmp/kiln-e2e';
export const CACHE_DIR = process.env.KILN_CACHE_DIR ?? join(E2E_DIR, 'cache');
export const RUN_ID = process.env.KILN_E2E_RUN ?? `single-${process.pid}`;

export interface KilnRun { code: number | null; stdout: string; stderr: string; signal: NodeJS.Signals | null }

/** No single kiln command of the suite takes this long: past it, the run is a hang, ended and reported. */
const KILN_TIMEOUT_MS = 20 * 60 * 1000;
let runs = 0;

/**
 * Runs the kiln CLI as a user would. Its stderr also goes to <run>/logs/<n>-<command>.log as it
 * arrives, so a CI failure (or a hang) can be read afterwards.
 *
 * `kiln build` runs with --no-cache unless the test asks for the step cache (`cache: true`): a
 * test of what a playbook, the seal or the disk does must see them run, not an output an earlier
 * build left in the shared cache. (The base and tools trees are shared: they are inputs, checked on use.)
 */
export function kiln(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; onStderr?: (chunk: string, child: ReturnType<typeof spawn>) => void; timeoutMs?: number; cache?: boolean }): Promise<KilnRun> {
  if (args[0] === 'build' && !opts.cache && !args.includes('--no-cache')) args = [...args, '--no-cache'];
  const logs = join(E2E_DIR, RUN_ID, 'logs');
  mkdirSync(logs, { recursive: true });
  const log = join(logs, `${String(++runs).padStart(3, '0')}-${process.pid}-${args.join('_').replace(/[^A-Za-z0-9@._-]+/g, '_').slice(0, 60)}.log`);
  appendFileSync(log, `$ kiln ${args.join(' ')}   (in ${opts.cwd})\n`);
  return new Promise((res) => {
    const child = spawn(process.execPath, [KILN, ...args], { cwd: opts.cwd, env: { ...process.env, KILN_CACHE_DIR: CACHE_DIR, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; appendFileSync(log, d); opts.onStderr?.(d, child); });
    const timer = setTimeout(() => {
      appendFileSync(log, `\n[e2e] no exit after ${(opts.timeoutMs ?? KILN_TIMEOUT_MS) / 1000} s: SIGKILL\n`);
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? KILN_TIMEOUT_MS);
    child.on('close', (code, signal) => { clearTimeout(timer); appendFileSync(log, `\n[e2e] exit ${code ?? signal}\n`); res({ code, stdout, stderr, signal }); });
  });
}

export function git(dir: string, ...args: string[]): string {
  return execFileSync('git', ['-C', dir, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', ...args], { encoding: 'utf8' }).trim();
}

/** A fresh git repository holding a copy of an example, committed (at a fixed date) and optionally tagged. */
/** Image repositories live in a directory whose name has a space: every build shows that such paths work. */
export function exampleRepo(name: string, opts: { example?: string; tag?: string; edit?: (dir: string) => void; date?: string } = {}): string {
  const dir = join(E2E_DIR, RUN_ID, 'image repos', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // Not the example's .kiln/ (git-ignored): a demo run in this checkout leaves its builds there, device
  // nodes of a kept tree among them, which cpSync cannot copy and no test may start from.
  const example = join(ROOT, 'examples', opts.example ?? 'debian-web');
  cpSync(example, dir, { recursive: true, filter: (src) => relative(example, src).split(sep)[0] !== '.kiln' });
  opts.edit?.(dir);
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'add', '-A');
  const date = opts.date ?? '2026-11-01T12:00:00Z';
  execFileSync('git', ['-C', dir, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', 'commit', '-qm', 'image'], { env: { ...process.env, GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date } });
  if (opts.tag) git(dir, 'tag', opts.tag);
  return dir;
}

export interface BuiltExample { dir: string; record: BuildRecordLite }
export interface BuildRecordLite {
  name: string; version: string; commit: string; outDir: string; sourceDateEpoch: number;
  artifacts: { format: string; file: string; size: number; sha256: string }[];
  source: { verified: boolean; inReleaseSha256: string; signingKeyFingerprint: string; packages: { name: string; version: string; arch: string }[] };
  provision: { tasks: { task: string; status: string }[]; totals: Record<string, number>; idempotence?: { changed: string[] } };
  packages: { name: string; version: string }[];
  steps: { name: string; status: string; durationMs: number }[];
  release?: { ref: string; digest: string; store: string };
}

/**
 * Builds the example once per test run (tag release-0.1.0) and returns its build record. Test files
 * run two at a time (scripts/test.mjs), so the build runs under Kiln's own lock file (withLock: a dead
 * holder's lock is broken) and the others wait for it and take its record; a failed build leaves no
 * record, so each waiter then tries (and reports) the build itself.
 */
export async function builtExample(): Promise<BuiltExample> {
  const marker = join(E2E_DIR, RUN_ID, 'example-build.json');
  const recorded = () => (existsSync(marker) ? JSON.parse(readFileSync(marker, 'utf8')) as BuiltExample : undefined);
  const known = recorded();
  if (known) return known;
  mkdirSync(join(E2E_DIR, RUN_ID), { recursive: true });
  return withLock(join(E2E_DIR, RUN_ID, 'example-build.lock'), async () => {
    const earlier = recorded();
    if (earlier) return earlier;
    const dir = exampleRepo('example', { tag: 'release-0.1.0' });
    // With the step cache (emptied at the start of each run by scripts/test.mjs): step-cache.test.ts rebuilds from it.
    const r = await kiln(['build', '--json'], { cwd: dir, cache: true });
    if (r.code !== 0) throw new Error(`example build failed (${r.code}):\n${r.stderr.slice(-6000)}`);
    const built = { dir, record: JSON.parse(r.stdout) as BuildRecordLite };
    writeFileAtomic(marker, JSON.stringify(built));
    return built;
  }, KILN_TIMEOUT_MS, { what: 'the example build' });
}

/** Mounts whose mount point is under the given directory (there must be none after any build). */
/**
 * Mount points under dir in any mount namespace on the machine, not only the test's own: a build's
 * mounts live in private namespaces (the sandbox's, fuse2fs's), where the test's /proc/mounts could
 * never show a leak. One process per namespace is read; a process that exits meanwhile is skipped.
 */
export function mountsUnder(dir: string): string[] {
  // mountinfo writes a space in a path as \040 (and tab, newline, backslash likewise).
  const decode = (m: string) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const seen = new Set<string>();
  const found = new Set<string>();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let ns: string;
    let info: string;
    try {
      ns = readlinkSync(`/proc/${pid}/ns/mnt`);
      if (seen.has(ns)) continue;
      info = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
    } catch { continue; }
    seen.add(ns);
    // Field 5 of each line is the mount point.
    for (const l of info.split('\n')) {
      const m = decode(l.split(' ')[4] ?? '');
      if (m && m.startsWith(dir)) found.add(`${m} (mount namespace ${ns}, seen from pid ${pid})`);
    }
  }
  return [...found].sort();
}

export function artifact(b: BuiltExample, format: string): string {
  const a = b.record.artifacts.find((x) => x.format === format);
  if (!a) throw new Error(`no ${format} artifact in the build`);
  return a.file;
}

/**
 * One debugfs request on the root filesystem of a raw disk (nothing is mounted). debugfs exits 0
 * when a request fails and says so on stderr: anything there but its banner throws, so a missing
 * file is never read as an empty one.
 */
function debugfsRequest(raw: string, request: string): string {
  const r = spawnSync('debugfs', ['-R', request, `${raw}?offset=${rootOffset(raw)}`], { encoding: 'utf8' });
  const errors = (r.stderr ?? '').split('\n').filter((l) => l.trim() && !/^debugfs \d+(\.\d+)* \(/.test(l));
  if (r.status !== 0 || errors.length) throw new Error(`debugfs -R '${request}' on ${raw}: ${errors.join('; ') || `exit ${r.status}`}`);
  return r.stdout;
}

/** A file of the root filesystem of a raw disk; throws when it is not there. */
export async function readFromDisk(raw: string, path: string): Promise<string> {
  return debugfsRequest(raw, `cat ${path}`);
}

export async function listOnDisk(raw: string, dir: string): Promise<string[]> {
  const out = debugfsRequest(raw, `ls -l ${dir}`);
  return out.split('\n').map((l) => l.trim().split(/\s+/).pop() ?? '').filter((n) => n && n !== '.' && n !== '..');
}

/** Processes a build's sandbox runs (none may outlive a build). */
export function sandboxProcesses(): string[] {
  return execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n')
    .filter((l) => /slirp4netns .*tap0|\/tmp\/root\/\.kiln-init|sleep infinity|nsenter --target=|ansible-playbook/.test(l));
}

/** Network namespaces on the host (a build's must be gone when it ends). */
export function netNamespaces(): string[] {
  return execFileSync('lsns', ['-t', 'net', '-n', '-o', 'NS'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
}

/** An empty folder of this run for one test file: <E2E_DIR>/<run>/<name>. */
export function freshWorkDir(name: string): string {
  const d = join(E2E_DIR, RUN_ID, name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  return d;
}

/**
 * Shims for host tools that record the environment Kiln's host commands get, as <work>/env-<tool>.<pid>
 * (the dump path is in the shim's text, since nothing else would reach it). Returns PATH with the shims
 * first: PATH is one of the variables Kiln passes on.
 */
export function envRecordingPath(work: string, tools: string[]): string {
  const shims = join(work, 'shims');
  mkdirSync(shims, { recursive: true });
  for (const tool of tools) {
    writeFileSync(join(shims, tool), `#!/bin/sh\nenv > "${join(work, `env-${tool}`)}.$$"\nexec /usr/bin/${tool} "$@"\n`);
    chmodSync(join(shims, tool), 0o755);
  }
  return `${shims}:${process.env.PATH ?? '/usr/bin:/bin'}`;
}

/** The files under `dirs` (below 64 MiB; missing folders skipped) that hold any of `secrets`. */
export function filesHolding(dirs: string[], secrets: string[]): string[] {
  const seen: string[] = [];
  const scan = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) scan(p);
      else if (e.isFile() && statSync(p).size < 64 << 20) { const b = readFileSync(p); if (secrets.some((s) => b.includes(s))) seen.push(p); }
    }
  };
  for (const d of dirs) if (existsSync(d)) scan(d);
  return seen;
}

/** sha256 of a file, read by the test itself: what is compared is the bytes on disk, not what Kiln says of them. */
export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}
