/**
 * The GitLab pipeline `kiln plan --emit gitlab` writes, run for real on this machine by
 * gitlab-ci-local (npm, shell executor with --shell-isolation: every job in its own copy of the
 * checkout, so its own empty .kiln/cache), with Debian's docker-registry on 127.0.0.1 as the
 * shared release store and step cache, and a bare git repository as the remote the runner clones.
 *
 * The family: `base` from the Debian archive, `web` and `worker` on base@release-0.1.0 (the version
 * this pipeline builds), each with a one-task playbook and one format (qcow2), so the three stages
 * cost what a pipeline costs, not what a big image does. A second job builds worker too: two
 * runners racing to release one version with the same content.
 *
 * 1. The first run builds base, then web and worker side by side (and the racing worker); every job
 *    passes, one worker job reports "already released, identical".
 * 2. The same pipeline again, every job on a fresh copy with an empty cache: every step comes from
 *    the registry, nothing is built or pushed, and every job reports the release identical.
 *
 * A different build of a released version (the tag moved to another commit) failing with the conflict
 * is test/e2e/step-cache.test.ts, with the example's seven formats.
 *
 * The registry starts with the tools tree and the base tree (the family's base is the example's
 * Debian: same suite, packages and archive state), pushed from the suite's own cache, as a team's
 * registry holds them from earlier pipelines: the jobs pay for the family's steps, not for two
 * mmdebstrap runs the example already made (on a fresh CI machine, minutes of downloads). So the
 * example is built first (or waited for, when another file of the run is building it: test files run
 * two at a time), which fills the suite's cache with both trees.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { openStore } from '../../src/store/index.js';
import { silentLogger } from '../../src/log.js';
import { RemoteCache } from '../../src/pipeline/remote-cache.js';
import { controllerFor } from '../../src/sandbox/tools.js';
import { baseTarball, verifyArchive } from '../../src/source/debian.js';
import { loadTemplate } from '../../src/template/load.js';
import { builtExample, CACHE_DIR, E2E_DIR, git, KILN, ROOT, RUN_ID } from '../e2e/fixture.js';
import { startRegistry, type TestRegistry } from '../unit/store-registry-fixture.js';

const GCL = join(ROOT, 'node_modules', '.bin', 'gitlab-ci-local');
const HERE = join(E2E_DIR, RUN_ID, 'ci-family');
const DATE = '2026-11-20T12:00:00Z';

function image(name: string, source: string, task: string): Record<string, string> {
  return {
    'kiln.yaml': `name: ${name}\ndescription: the CI family's ${name}\n${source}provision:\n  playbook: playbook.yml\ndisk:\n  size: 2GiB\n  hostname: ${name}\nformats: [qcow2]\nrelease:\n  store: STORE\n`,
    'playbook.yml': `- name: ${name}\n  hosts: all\n  gather_facts: false\n  tasks:\n    - name: ${task}\n      ansible.builtin.copy:\n        dest: /etc/${name}-role\n        content: "${name}\\n"\n        mode: "0644"\n`,
  };
}

/** gitlab-ci-local in the runner's checkout; KILN_CACHE_DIR unset, so each job's cache is its own copy's .kiln/cache. */
function runPipeline(cwd: string): Promise<{ code: number | null; out: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.KILN_CACHE_DIR;
  return run(GCL, ['--file', '.kiln-ci/pipeline.yml', '--shell-isolation', '--no-color', '--variable', `KILN=${process.execPath} ${KILN}`], cwd, 'pipeline', env, 40);
}

/** Pushes the tools tree and the base tree of the image at dir to the cache at spec, from the suite's cache (building what it lacks). */
async function seed(dir: string, spec: string): Promise<string[]> {
  const c = loadTemplate(join(dir, 'kiln.yaml')).config;
  const work = join(HERE, 'seed');
  mkdirSync(work, { recursive: true });
  const remote = new RemoteCache(spec, join(work, 'push'), silentLogger);
  await controllerFor(c, CACHE_DIR, work, silentLogger, undefined, undefined, remote);
  const trust = await verifyArchive(c.source.debian, work, silentLogger);
  await baseTarball(c.source.debian, trust, CACHE_DIR, work, silentLogger, undefined, undefined, remote);
  await remote.flush();
  rmSync(work, { recursive: true, force: true });
  return remote.stats.pushed;
}

/** A command, its stdout and stderr together (also logged); resolves with its exit code. */
function run(cmd: string, args: string[], cwd: string, name: string, env: NodeJS.ProcessEnv = process.env, minutes = 30): Promise<{ code: number | null; out: string }> {
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

/** The lines a job printed ("build:base  > …"), by the job's name as gitlab-ci-local shows it. */
function jobLines(out: string, job: string): string[] {
  return out.split('\n').filter((l) => l.startsWith(job) && /^\S[^>]*>/.test(l));
}

describe('a family as a GitLab pipeline (gitlab-ci-local, docker-registry, a bare remote)', () => {
  let reg: TestRegistry;
  let store: string;
  let checkout: string;
  const digests = new Map<string, string>();
  before(async () => {
    await builtExample();
    reg = await startRegistry();
    store = `oci://127.0.0.1:${reg.port}/family`;
    rmSync(HERE, { recursive: true, force: true });
    const src = join(HERE, 'src');
    const images: Record<string, Record<string, string>> = {
      base: image('base', 'source:\n  debian:\n    suite: trixie\n', 'Mark the base'),
      web: image('web', `source:\n  release:\n    ref: base@release-0.1.0\n    store: STORE\n    format: qcow2\n`, 'Mark the web image'),
      worker: image('worker', `source:\n  release:\n    ref: base@release-0.1.0\n    store: STORE\n    format: qcow2\n`, 'Mark the worker image'),
    };
    for (const [name, files] of Object.entries(images)) {
      mkdirSync(join(src, name), { recursive: true });
      for (const [f, text] of Object.entries(files)) writeFileSync(join(src, name, f), text.replace(/STORE/g, store));
    }
    writeFileSync(join(src, '.gitignore'), '.kiln/\n.kiln-ci/\n.gitlab-ci-local/\n');
    git(src, 'init', '-q', '-b', 'main');
    git(src, 'add', '-A');
    const env = { ...process.env, GIT_AUTHOR_DATE: DATE, GIT_COMMITTER_DATE: DATE };
    execFileSync('git', ['-C', src, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', 'commit', '-qm', 'the family'], { env });
    git(src, 'tag', 'release-0.1.0');
    // The remote, and the runner's checkout of it.
    git(HERE, 'clone', '-q', '--bare', src, join(HERE, 'remote.git'));
    checkout = join(HERE, 'checkout');
    git(HERE, 'clone', '-q', join(HERE, 'remote.git'), checkout);
    // The pipeline: generated by kiln plan (what a generating job does), with one more job building
    // worker: two runners racing for one version.
    execFileSync(process.execPath, [KILN, 'plan', '.', '--emit', 'gitlab', '--cache', `oci://127.0.0.1:${reg.port}/ci`, '--out', '.kiln-ci/pipeline.yml'], { cwd: checkout, stdio: 'pipe' });
    const p = parse(readFileSync(join(checkout, '.kiln-ci', 'pipeline.yml'), 'utf8')) as Record<string, { needs?: unknown[]; script?: string[]; stage?: string }>;
    p['race:worker'] = { stage: 'build-2', needs: ['build:base'], variables: { IMAGE: 'worker', DIR: 'worker' }, script: p['build:base'].script } as (typeof p)[string];
    writeFileSync(join(checkout, '.kiln-ci', 'pipeline.yml'), stringify(p));
    const seeded = await seed(join(checkout, 'base'), `oci://127.0.0.1:${reg.port}/ci`);
    assert.equal(seeded.length, 2, `the tools tree and the base tree are in the registry: ${seeded.join(', ')}`);
  });
  // The jobs' copies hold a tools tree, a base and a disk each: gigabytes the rest of the run does not need.
  after(async () => { await reg?.stop(); if (checkout) rmSync(join(checkout, '.gitlab-ci-local'), { recursive: true, force: true }); });

  test('the emitted pipeline: base, then web and worker side by side; jobs call kiln only', () => {
    const p = parse(readFileSync(join(checkout, '.kiln-ci', 'pipeline.yml'), 'utf8')) as Record<string, { needs?: unknown[]; script?: string[]; parallel?: { matrix: { IMAGE: string }[] } }> & { variables: Record<string, string> };
    assert.deepEqual(p['build:base'].script, ['cd "$DIR"', '$KILN build --if-released verify']);
    assert.deepEqual(p['build:stage2:web+worker'].parallel?.matrix.map((m) => m.IMAGE), ['web', 'worker']);
    assert.deepEqual(p['build:stage2:web+worker'].needs, ['build:base']);
    assert.equal(p.variables.KILN_CACHE_REMOTE, `oci://127.0.0.1:${reg.port}/ci`);
  });

  test('first run: every job passes in dependency order, web and worker in parallel; the racing worker job is "identical"', async () => {
    const r = await runPipeline(checkout);
    assert.equal(r.code, 0, r.out.slice(-6000));
    const at = (re: RegExp) => r.out.split('\n').findIndex((l) => re.test(l));
    const baseDone = at(/^build:base\s.*finished in/);
    for (const child of ['web', 'worker']) {
      assert.ok(baseDone >= 0 && at(new RegExp(`^build:stage2:web\\+worker: \\[${child},${child}\\]\\s.*starting shell`)) > baseDone, `${child} starts after base finished`);
    }
    // Side by side: both stage-2 jobs started before either finished.
    const firstFinish = Math.min(...['web', 'worker'].map((c) => at(new RegExp(`^build:stage2:web\\+worker: \\[${c},${c}\\]\\s.*finished in`))));
    assert.ok(['web', 'worker'].every((c) => at(new RegExp(`^build:stage2:web\\+worker: \\[${c},${c}\\]\\s.*starting shell`)) < firstFinish), 'web and worker ran in parallel');
    // The base job took the seeded tools and base trees from the registry (and built the rest).
    const baseLines = jobLines(r.out, 'build:base').join('\n');
    assert.match(baseLines, /cache oci:\/\/127\.0\.0\.1:\d+\/ci: \d+ from it \((?=.*tools [0-9a-f]{12})(?=.*base [0-9a-f]{12}).*\); [1-9]\d* pushed/, baseLines.slice(-1500));
    assert.doesNotMatch(baseLines, /built by mmdebstrap/, 'the base job ran no mmdebstrap');
    assert.doesNotMatch(r.out, /could not push/, 'every push reached the registry');
    const released = await openStore(store, HERE);
    for (const name of ['base', 'web', 'worker']) {
      const e = await released.release(name, 'release-0.1.0');
      assert.ok(e, `${name}@release-0.1.0 is in the registry`);
      digests.set(name, e.digest);
    }
    // The two worker jobs: one released it, the other found the same artifacts there.
    const workerLines = [...jobLines(r.out, 'build:stage2:web+worker: [worker,worker]'), ...jobLines(r.out, 'race:worker')].join('\n');
    assert.equal((workerLines.match(/already released, identical/g) ?? []).length, 1, workerLines.slice(-3000));
    assert.equal((workerLines.match(/released: worker@release-0\.1\.0 \(sha256:[0-9a-f]{64}\)/g) ?? []).length, 2);
    assert.ok(workerLines.includes(digests.get('worker') ?? '?'));
  });

  test('second run, every runner empty: every step from the registry, nothing built or pushed, every release identical', async () => {
    const r = await runPipeline(checkout);
    assert.equal(r.code, 0, r.out.slice(-6000));
    for (const job of ['build:base', 'build:stage2:web+worker: [web,web]', 'build:stage2:web+worker: [worker,worker]', 'race:worker']) {
      const lines = jobLines(r.out, job).join('\n');
      assert.match(lines, /already released, identical/, job);
      assert.match(lines, /cache oci:\/\/127\.0\.0\.1:\d+\/ci: \d+ from it \(.*disk [0-9a-f]{12}.*\); 0 pushed/, `${job}: ${lines.slice(-1500)}`);
      assert.doesNotMatch(lines, /built by mmdebstrap|TASK /, `${job} built nothing`);
    }
    const released = await openStore(store, HERE);
    for (const [name, digest] of digests) assert.equal((await released.release(name, 'release-0.1.0'))?.digest, digest, `${name} is the first run's release`);
  });
  test('a job in the runner image (runner/Containerfile, built by scripts/runner-image.sh --from-archive with podman): every host tool present, Node 20; a changed worker built in it, its parent and tools from the registry', async () => {
    const tag = `localhost/kiln-runner:e2e-${process.pid}`;
    const base = 'localhost/kiln-debian-base:bookworm';
    // podman fitted to a host like this one, by a containers.conf of the test's own (the host's is not
    // touched): with cgroup v1 and v2 mounted side by side (hybrid) crun refuses to start, runc does not;
    // without CAP_SYS_RESOURCE no open-files limit above the host's hard limit can be set, and podman's
    // default asks for more. The README's "Runner requirements" says the same for a runner host.
    const hardNofile = execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
    const conf = join(HERE, 'containers.conf');
    writeFileSync(conf, `[containers]\ndefault_ulimits = ["nofile=${hardNofile}:${hardNofile}", "nproc=32768:32768"]\n${existsSync('/sys/fs/cgroup/unified') ? '[engine]\nruntime = "runc"\n' : ''}`);
    const env = { ...process.env, CONTAINERS_CONF: conf };
    try {
      // The host's apt and npm caches lent to the build as overlays (what is written there is thrown
      // away): the packages the test setup installed, and the tarballs npm ci fetched, are not fetched
      // again. No layer cache: nothing is left behind but the two images removed below.
      const built = await run('bash', [join(ROOT, 'scripts', 'runner-image.sh'), '--from-archive', '--host-ca', '--tag', tag, '--', '--layers=false', '--volume', '/var/cache/apt/archives:/var/cache/apt/archives:O', ...(existsSync(join(homedir(), '.npm')) ? ['--volume', `${join(homedir(), '.npm')}:/root/.npm:O`] : [])], ROOT, 'runner-image', env);
      assert.equal(built.code, 0, built.out.slice(-4000));
      // A fresh checkout with a changed playbook: a snapshot build in the container, with an empty cache.
      const job = join(HERE, 'container-job');
      rmSync(job, { recursive: true, force: true });
      git(HERE, 'clone', '-q', join(HERE, 'remote.git'), job);
      writeFileSync(join(job, 'worker', 'playbook.yml'), image('worker', '', 'Mark the worker image, in the runner image')['playbook.yml']);
      const r = await run('podman', ['run', '--rm', '--privileged', '--network', 'host', '-v', `${job}:/job`, '-w', '/job/worker',
        '-e', `KILN_CACHE_REMOTE=oci://127.0.0.1:${reg.port}/ci`, '-e', 'KILN_CACHE_REMOTE_PUSH=0', tag,
        'sh', '-c', 'node --version && kiln doctor --check && kiln build --snapshot --no-release'], HERE, 'runner-job', env);
      assert.equal(r.code, 0, r.out.slice(-6000));
      assert.match(r.out, /^v20\./m, 'Node 20 in the image');
      assert.match(r.out, /all host tools are present/);
      assert.match(r.out, /changed\s+Mark the worker image, in the runner image/, 'the playbook ran in the container');
      assert.match(r.out, /cache oci:\/\/127\.0\.0\.1:\d+\/ci: \d+ from it \(.*tools [0-9a-f]{12}.*\)/, 'the tools tree came from the registry');
      assert.match(r.out, /resolving base@release-0\.1\.0 in oci:\/\/127\.0\.0\.1/, 'the parent came from the release store');
      const out = readdirSync(join(job, 'worker', '.kiln', 'out'));
      assert.equal(out.length, 1, out.join(', '));
      assert.ok(readdirSync(join(job, 'worker', '.kiln', 'out', out[0])).some((f) => f.endsWith('.qcow2')), 'a qcow2 was written');
    } finally {
      // The image and its base are this test's: gigabytes the rest of the run does not need.
      await run('podman', ['rmi', '--force', tag, base], HERE, 'runner-rmi', env);
      rmSync(join(HERE, 'container-job'), { recursive: true, force: true });
    }
  });
});
