/**
 * The GitLab pipeline `kiln plan --emit gitlab` writes, run for real on this machine by
 * gitlab-ci-local (npm, shell executor with --shell-isolation: every job in its own copy of the
 * checkout, so its own empty .kiln/cache), with Debian's docker-registry on 127.0.0.1 as the
 * shared release store and step cache, and a bare git repository as the remote the runner clones.
 * The family (base; web and worker on it) and the registry's seeding: test/e2e/pipeline-fixture.ts.
 *
 * 1. The first run builds base, then web and worker side by side (and the racing worker); every job
 *    passes, one worker job reports "already released, identical".
 * 2. The same pipeline again, every job on a fresh copy with an empty cache (the copies of the first run
 *    removed): every step comes from the registry, nothing is built or pushed, every job reports the
 *    release identical, and the qcow2 each job wrote, hashed here, is the released bytes. This is also the
 *    suite's test of a fresh runner served by a remote step cache (it replaced the example's seven-format
 *    version of it in step-cache.test.ts, which cost 381 s of the suite).
 *
 * A different build of a released version (the tag moved to another commit) failing with the conflict
 * is test/e2e/step-cache.test.ts, with the example's seven formats. A job in the runner image
 * (runner/Containerfile, built with podman) is test/pipeline/runner-image.test.ts (`npm run test:pipeline`).
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { openStore } from '../../src/store/index.js';
import { sha256File } from './fixture.js';
import { jobLines, runPipeline, setupFamily, type Family } from './pipeline-fixture.js';

describe('a family as a GitLab pipeline (gitlab-ci-local, docker-registry, a bare remote)', () => {
  let family: Family | undefined;
  let store: string;
  let cache: string;
  let checkout: string;
  const digests = new Map<string, string>();
  before(async () => {
    family = await setupFamily('ci-family');
    ({ store, cache, checkout } = family);
  });
  after(async () => { await family?.stop(); });

  test('the emitted pipeline: base, then web and worker side by side; jobs call kiln only', () => {
    const p = parse(readFileSync(join(checkout, '.kiln-ci', 'pipeline.yml'), 'utf8')) as Record<string, { needs?: unknown[]; script?: string[]; parallel?: { matrix: { IMAGE: string }[] } }> & { variables: Record<string, string> };
    assert.deepEqual(p['build:base'].script, ['cd "$DIR"', '$KILN build --if-released verify']);
    assert.deepEqual(p['build:stage2:web+worker'].parallel?.matrix.map((m) => m.IMAGE), ['web', 'worker']);
    assert.deepEqual(p['build:stage2:web+worker'].needs, ['build:base']);
    assert.equal(p.variables.KILN_CACHE_REMOTE, cache);
  });

  test('first run: every job passes in dependency order, web and worker in parallel; the racing worker job is "identical"', async () => {
    const r = await runPipeline(checkout, family!.keys);
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
    // Signed by the family's key, which every job requires (KILN_CACHE_TRUST_KEYS).
    assert.match(baseLines, /cache oci:\/\/127\.0\.0\.1:\d+\/ci: \d+ from it \((?=.*tools [0-9a-f]{12})(?=.*base [0-9a-f]{12}).*\), signed by SHA256:\S+ ci-cache@kiln\.test; [1-9]\d* pushed/, baseLines.slice(-1500));
    assert.doesNotMatch(baseLines, /built by mmdebstrap/, 'the base job ran no mmdebstrap');
    assert.doesNotMatch(r.out, /could not push/, 'every push reached the registry');
    const released = await openStore(store, family!.here);
    for (const name of ['base', 'web', 'worker']) {
      const e = await released.release(name, 'release-0.1.0');
      assert.ok(e, `${name}@release-0.1.0 is in the registry`);
      digests.set(name, e.digest);
      // Each job took signed entries from the registry (base: the seeded trees; web and worker: base's tools tree at least).
      assert.match(e.record.build?.remoteCache?.signedBy?.join() ?? '', /^SHA256:\S+ ci-cache@kiln\.test$/, `${name}'s release names who signed what it took from the cache`);
    }
    // The two worker jobs: one released it, the other found the same artifacts there.
    const workerLines = [...jobLines(r.out, 'build:stage2:web+worker: [worker,worker]'), ...jobLines(r.out, 'race:worker')].join('\n');
    assert.equal((workerLines.match(/already released, identical/g) ?? []).length, 1, workerLines.slice(-3000));
    assert.equal((workerLines.match(/released: worker@release-0\.1\.0 \(sha256:[0-9a-f]{64}\)/g) ?? []).length, 2);
    assert.ok(workerLines.includes(digests.get('worker') ?? '?'));
  });

  test('second run, every runner empty: every step from the registry, nothing built or pushed, every release identical, the bytes released', async () => {
    // The first run's job copies (and their .kiln/cache) go: each job of this run starts from an empty copy.
    const builds = join(checkout, '.gitlab-ci-local', 'builds');
    rmSync(builds, { recursive: true, force: true });
    const r = await runPipeline(checkout, family!.keys);
    assert.equal(r.code, 0, r.out.slice(-6000));
    for (const job of ['build:base', 'build:stage2:web+worker: [web,web]', 'build:stage2:web+worker: [worker,worker]', 'race:worker']) {
      const lines = jobLines(r.out, job).join('\n');
      assert.match(lines, /already released, identical/, job);
      assert.match(lines, /cache oci:\/\/127\.0\.0\.1:\d+\/ci: \d+ from it \(.*disk [0-9a-f]{12}.*\), signed by SHA256:\S+ ci-cache@kiln\.test; 0 pushed/, `${job}: ${lines.slice(-1500)}`);
      assert.doesNotMatch(lines, /built by mmdebstrap|TASK /, `${job} built nothing`);
    }
    const released = await openStore(store, family!.here);
    for (const [name, digest] of digests) assert.equal((await released.release(name, 'release-0.1.0'))?.digest, digest, `${name} is the first run's release`);
    // What each job wrote from the registry's entries, hashed here, against what the release records.
    const jobs = readdirSync(builds).filter((j) => !j.startsWith('.')); // .docker is gitlab-ci-local's own
    assert.equal(jobs.length, 4, `one copy per job: ${jobs.join(', ')}`);
    for (const job of jobs) {
      const image = ['base', 'web', 'worker'].find((n) => existsSync(join(builds, job, n, '.kiln', 'out', `${n}-release-0.1.0`)));
      assert.ok(image, `${job} wrote an image's artifacts`);
      const file = join(builds, job, image, '.kiln', 'out', `${image}-release-0.1.0`, `${image}-release-0.1.0.qcow2`);
      const want = (await released.release(image, 'release-0.1.0'))?.record.artifacts.find((a) => a.format === 'qcow2')?.sha256;
      assert.ok(want, `${image}'s release records its qcow2`);
      assert.equal(await sha256File(file), want, `${job}: ${file} is the released qcow2`);
    }
  });
});
