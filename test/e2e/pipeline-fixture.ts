/**
 * The CI family the pipeline tests run: `base` from the Debian archive, `web` and `worker` on
 * base@release-0.1.0 (the version the pipeline builds), each with a one-task playbook and one format
 * (qcow2), so the three stages cost what a pipeline costs, not what a big image does. In a bare git
 * repository (the remote a runner clones) and a runner's checkout of it, with the pipeline
 * `kiln plan --emit gitlab` writes plus one more job building worker (two runners racing for one
 * version), and Debian's docker-registry on 127.0.0.1 as the shared release store and step cache.
 *
 * The registry starts with the tools tree and the base tree (the family's base is the example's
 * Debian: same suite, packages and archive state), pushed from the suite's own cache, as a team's
 * registry holds them from earlier pipelines: the jobs pay for the family's steps, not for two
 * mmdebstrap runs the example already made (on a fresh CI machine, minutes of downloads). So the
 * example is built first (or waited for, when another file of the run is building it: test files run
 * two at a time), which fills the suite's cache with both trees. Every entry is signed (the seed and
 * every job push with one SSH key) and every job uses only entries that key signed
 * (KILN_CACHE_SIGNING_KEY, KILN_CACHE_TRUST_KEYS: what a team sets in its CI settings).
 *
 * Used by test/pipeline/pipeline.test.ts (the pipeline's two runs) and
 * test/pipeline/runner-image.test.ts (a job in the runner image); `npm run test:pipeline` runs both.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { silentLogger } from '../../src/log.js';
import { RemoteCache } from '../../src/pipeline/remote-cache.js';
import { loadSigner } from '../../src/store/signing.js';
import { controllerFor } from '../../src/sandbox/tools.js';
import { baseTarball, verifyArchive } from '../../src/source/debian.js';
import { loadTemplate } from '../../src/template/load.js';
import { startRegistry, type TestRegistry } from '../unit/store-registry-fixture.js';
import { builtExample, CACHE_DIR, E2E_DIR, git, KILN, ROOT, RUN_ID } from './fixture.js';

const GCL = join(ROOT, 'node_modules', '.bin', 'gitlab-ci-local');
const DATE = '2026-11-20T12:00:00Z';

/** One image of the family: its kiln.yaml (with STORE for the store's address) and playbook. */
export function image(name: string, source: string, task: string): Record<string, string> {
  return {
    'kiln.yaml': `name: ${name}\ndescription: the CI family's ${name}\n${source}provision:\n  playbook: playbook.yml\ndisk:\n  size: 2GiB\n  hostname: ${name}\nformats: [qcow2]\nrelease:\n  store: STORE\n`,
    'playbook.yml': `- name: ${name}\n  hosts: all\n  gather_facts: false\n  tasks:\n    - name: ${task}\n      ansible.builtin.copy:\n        dest: /etc/${name}-role\n        content: "${name}\\n"\n        mode: "0644"\n`,
  };
}

/** A command, its stdout and stderr together (also logged); resolves with its exit code. */
export function run(cmd: string, args: string[], cwd: string, name: string, env: NodeJS.ProcessEnv = process.env, minutes = 30): Promise<{ code: number | null; out: string }> {
  const log = join(E2E_DIR, RUN_ID, 'logs', `${name}-${Date.now()}.log`);
  mkdirSync(join(E2E_DIR, RUN_ID, 'logs'), { recursive: true });
  return new Promise((res) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const add = (d: Buffer) => { out += d.toString(); appendFileSync(log, d); };
    child.stdout.on('data', add);
    child.stderr.on('data', add);
    const timer = setTimeout(() => child.kill('SIGKILL'), minutes * 60_000);
    child.on('close', (code) => { clearTimeout(timer); res({ code, out }); });
  });
}

/**
 * gitlab-ci-local in the runner's checkout; KILN_CACHE_DIR unset, so each job's cache is its own copy's
 * .kiln/cache. With keys, the jobs sign what they push to the cache and use only what that key signed.
 */
export function runPipeline(cwd: string, keys?: CacheKeys): Promise<{ code: number | null; out: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...(keys ? { KILN_CACHE_SIGNING_KEY: keys.priv, KILN_CACHE_TRUST_KEYS: keys.pub } : {}) };
  delete env.KILN_CACHE_DIR;
  return run(GCL, ['--file', '.kiln-ci/pipeline.yml', '--shell-isolation', '--no-color', '--variable', `KILN=${process.execPath} ${KILN}`], cwd, 'pipeline', env, 40);
}

/** The lines a job printed ("build:base  > …"), by the job's name as gitlab-ci-local shows it. */
export function jobLines(out: string, job: string): string[] {
  return out.split('\n').filter((l) => l.startsWith(job) && /^\S[^>]*>/.test(l));
}

/** The SSH key pair that signs the family's cache entries (absolute paths: jobs run in each image's folder). */
export interface CacheKeys { priv: string; pub: string }

/** Pushes the tools tree and the base tree of the image at dir to the cache at spec, signed, from the suite's cache (building what it lacks). */
async function seed(here: string, dir: string, spec: string, keys: CacheKeys): Promise<string[]> {
  const c = loadTemplate(join(dir, 'kiln.yaml')).config;
  const work = join(here, 'seed');
  mkdirSync(work, { recursive: true });
  const remote = new RemoteCache(spec, join(work, 'push'), silentLogger, { signer: await loadSigner(keys.priv) });
  await controllerFor(c, CACHE_DIR, work, silentLogger, undefined, undefined, remote);
  const trust = await verifyArchive(c.source.debian, work, silentLogger);
  await baseTarball(c.source.debian, trust, CACHE_DIR, work, silentLogger, undefined, undefined, remote);
  await remote.flush();
  rmSync(work, { recursive: true, force: true });
  return remote.stats.pushed;
}

export interface Family {
  reg: TestRegistry;
  /** oci://127.0.0.1:port/family: the release store. */
  store: string;
  /** oci://127.0.0.1:port/ci: the step cache. */
  cache: string;
  /** The family's folder: src, remote.git, checkout. */
  here: string;
  checkout: string;
  /** The key pair the cache's entries are signed with. */
  keys: CacheKeys;
  /** Stops the registry and removes the jobs' copies (gigabytes the rest of the run does not need). */
  stop(): Promise<void>;
}

/** The family in `name` under the run's scratch, its pipeline emitted, the registry seeded. */
export async function setupFamily(name: string): Promise<Family> {
  await builtExample();
  const reg = await startRegistry();
  const store = `oci://127.0.0.1:${reg.port}/family`;
  const cache = `oci://127.0.0.1:${reg.port}/ci`;
  const here = join(E2E_DIR, RUN_ID, name);
  const checkout = join(here, 'checkout');
  const keys: CacheKeys = { priv: join(here, 'keys', 'cache-signing-key'), pub: join(here, 'keys', 'cache-signing-key.pub') };
  const stop = async (): Promise<void> => { await reg.stop(); rmSync(join(checkout, '.gitlab-ci-local'), { recursive: true, force: true }); };
  try {
    rmSync(here, { recursive: true, force: true });
    const src = join(here, 'src');
    const images: Record<string, Record<string, string>> = {
      base: image('base', 'source:\n  debian:\n    suite: trixie\n', 'Mark the base'),
      web: image('web', `source:\n  release:\n    ref: base@release-0.1.0\n    store: STORE\n    format: qcow2\n`, 'Mark the web image'),
      worker: image('worker', `source:\n  release:\n    ref: base@release-0.1.0\n    store: STORE\n    format: qcow2\n`, 'Mark the worker image'),
    };
    for (const [n, files] of Object.entries(images)) {
      mkdirSync(join(src, n), { recursive: true });
      for (const [f, text] of Object.entries(files)) writeFileSync(join(src, n, f), text.replace(/STORE/g, store));
    }
    writeFileSync(join(src, '.gitignore'), '.kiln/\n.kiln-ci/\n.gitlab-ci-local/\n');
    git(src, 'init', '-q', '-b', 'main');
    git(src, 'add', '-A');
    const env = { ...process.env, GIT_AUTHOR_DATE: DATE, GIT_COMMITTER_DATE: DATE };
    execFileSync('git', ['-C', src, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', 'commit', '-qm', 'the family'], { env });
    git(src, 'tag', 'release-0.1.0');
    // The remote, and the runner's checkout of it.
    git(here, 'clone', '-q', '--bare', src, join(here, 'remote.git'));
    git(here, 'clone', '-q', join(here, 'remote.git'), checkout);
    // The pipeline: generated by kiln plan (what a generating job does), with one more job building
    // worker: two runners racing for one version.
    execFileSync(process.execPath, [KILN, 'plan', '.', '--emit', 'gitlab', '--cache', cache, '--out', '.kiln-ci/pipeline.yml'], { cwd: checkout, stdio: 'pipe' });
    const p = parse(readFileSync(join(checkout, '.kiln-ci', 'pipeline.yml'), 'utf8')) as Record<string, { needs?: unknown[]; script?: string[]; stage?: string }>;
    p['race:worker'] = { stage: 'build-2', needs: ['build:base'], variables: { IMAGE: 'worker', DIR: 'worker' }, script: p['build:base'].script } as (typeof p)[string];
    writeFileSync(join(checkout, '.kiln-ci', 'pipeline.yml'), stringify(p));
    mkdirSync(join(here, 'keys'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ci-cache@kiln.test', '-f', keys.priv]);
    const seeded = await seed(here, join(checkout, 'base'), cache, keys);
    assert.equal(seeded.length, 2, `the tools tree and the base tree are in the registry: ${seeded.join(', ')}`);
  } catch (e) {
    await reg.stop();
    throw e;
  }
  return { reg, store, cache, here, checkout, keys, stop };
}
