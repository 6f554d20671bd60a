/**
 * A CI job in the runner image (runner/Containerfile, built by scripts/runner-image.sh --from-archive
 * with Debian's podman): every host tool present, Node 20, and a changed worker of the CI family
 * (test/e2e/pipeline-fixture.ts) built in it, its parent from the release store and its tools tree
 * from the registry's step cache.
 *
 * Not in `npm test`: building the image (a Debian base, the host tools, Node and npm ci inside it) takes
 * about 6.5 minutes of a CI run already near its limit; `npm run test:pipeline` runs it. Its before()
 * runs the family's pipeline once (test/pipeline/pipeline.test.ts checks that run) to release the parent.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { git, ROOT } from '../e2e/fixture.js';
import { image, run, runPipeline, setupFamily, type Family } from '../e2e/pipeline-fixture.js';

describe('the runner image', () => {
  let family: Family;
  before(async () => {
    family = await setupFamily('ci-family-runner');
    const r = await runPipeline(family.checkout);
    assert.equal(r.code, 0, `the family's pipeline (which releases base@release-0.1.0) failed:\n${r.out.slice(-6000)}`);
  });
  after(async () => { await family?.stop(); });

  test('a job in the runner image (runner/Containerfile, built by scripts/runner-image.sh --from-archive with podman): every host tool present, Node 20; a changed worker built in it, its parent and tools from the registry', async () => {
    const tag = `localhost/kiln-runner:e2e-${process.pid}`;
    const base = 'localhost/kiln-debian-base:bookworm';
    // podman fitted to a host like this one, by a containers.conf of the test's own (the host's is not
    // touched): with cgroup v1 and v2 mounted side by side (hybrid) crun refuses to start, runc does not;
    // without CAP_SYS_RESOURCE no open-files limit above the host's hard limit can be set, and podman's
    // default asks for more. The README's "Runner requirements" says the same for a runner host.
    const hardNofile = execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
    const conf = join(family.here, 'containers.conf');
    writeFileSync(conf, `[containers]\ndefault_ulimits = ["nofile=${hardNofile}:${hardNofile}", "nproc=32768:32768"]\n${existsSync('/sys/fs/cgroup/unified') ? '[engine]\nruntime = "runc"\n' : ''}`);
    const env = { ...process.env, CONTAINERS_CONF: conf };
    try {
      // The host's apt and npm caches lent to the build as overlays (what is written there is thrown
      // away): the packages the test setup installed, and the tarballs npm ci fetched, are not fetched
      // again. No layer cache: nothing is left behind but the two images removed below.
      const built = await run('bash', [join(ROOT, 'scripts', 'runner-image.sh'), '--from-archive', '--host-ca', '--tag', tag, '--', '--layers=false', '--volume', '/var/cache/apt/archives:/var/cache/apt/archives:O', ...(existsSync(join(homedir(), '.npm')) ? ['--volume', `${join(homedir(), '.npm')}:/root/.npm:O`] : [])], ROOT, 'runner-image', env);
      assert.equal(built.code, 0, built.out.slice(-4000));
      // A fresh checkout with a changed playbook: a snapshot build in the container, with an empty cache.
      const job = join(family.here, 'container-job');
      rmSync(job, { recursive: true, force: true });
      git(family.here, 'clone', '-q', join(family.here, 'remote.git'), job);
      writeFileSync(join(job, 'worker', 'playbook.yml'), image('worker', '', 'Mark the worker image, in the runner image')['playbook.yml']);
      const r = await run('podman', ['run', '--rm', '--privileged', '--network', 'host', '-v', `${job}:/job`, '-w', '/job/worker',
        '-e', `KILN_CACHE_REMOTE=${family.cache}`, '-e', 'KILN_CACHE_REMOTE_PUSH=0', tag,
        'sh', '-c', 'node --version && kiln doctor --check && kiln build --snapshot --no-release'], family.here, 'runner-job', env);
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
      await run('podman', ['rmi', '--force', tag, base], family.here, 'runner-rmi', env);
      rmSync(join(family.here, 'container-job'), { recursive: true, force: true });
    }
  });
});
