/**
 * kiln plan: a family of image folders ordered by their source.release parents into stages, with
 * publish jobs, released images skipped, untagged ones left out; the GitLab and GitHub pipelines it
 * writes (parsed back: every needs edge is a parent edge, matrix jobs group what builds the same
 * way); a cycle and two images of one name are errors naming the file.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { parse } from 'yaml';
import { gitlabPipeline, githubWorkflow } from '../../src/plan/emit.js';
import { familyFiles, makePlan, planText } from '../../src/plan/index.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'kiln-plan-'));
after(() => rmSync(work, { recursive: true, force: true }));

const git = (dir: string, ...args: string[]) => execFileSync('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@e', ...args], { encoding: 'utf8' });

/** The example family (base; web and worker on base@stable) plus: api on web@stable (stage 3), tools (no parent), ext (on a release outside the family). */
function family(name: string, opts: { extra?: (d: string) => void } = {}): string {
  const d = join(work, name);
  cpSync(join(ROOT, 'examples/family'), d, { recursive: true });
  const child = (img: string, ref: string, publish = '') => {
    cpSync(join(d, 'web'), join(d, img), { recursive: true });
    const y = readFileSync(join(d, img, 'kiln.yaml'), 'utf8').replace(/^name: web$/m, `name: ${img}`).replace('ref: base@stable', `ref: ${ref}`);
    writeFileSync(join(d, img, 'kiln.yaml'), y + publish);
  };
  child('api', 'web@stable', 'publish:\n  gce:\n    project: kiln-demo\n    bucket: kiln-images\n    family: api\n');
  child('ext', 'other@stable');
  cpSync(join(d, 'base'), join(d, 'tools'), { recursive: true });
  writeFileSync(join(d, 'tools', 'kiln.yaml'), readFileSync(join(d, 'tools', 'kiln.yaml'), 'utf8').replace(/^name: base$/m, 'name: tools'));
  opts.extra?.(d);
  git(d, 'init', '-q');
  git(d, 'add', '-A');
  git(d, 'commit', '-qm', 'family');
  git(d, 'tag', 'release-0.1.0');
  return d;
}

test('stages by parent, matrix groups, publish jobs; released images skipped; the pipelines\' needs are exactly the parent edges', async () => {
  const d = family('fam');
  const files = familyFiles([d]);
  assert.deepEqual(files.map((f) => f.slice(d.length + 1)), ['api/kiln.yaml', 'base/kiln.yaml', 'ext/kiln.yaml', 'tools/kiln.yaml', 'web/kiln.yaml', 'worker/kiln.yaml']);
  const released = new Set(['tools']);
  const plan = await makePlan(files, { cwd: d, released: async (t) => released.has(t.config.name) });
  assert.deepEqual(plan.stages, [['base', 'ext', 'tools'], ['web', 'worker'], ['api']]);
  const img = (n: string) => plan.images.find((i) => i.name === n)!;
  assert.deepEqual(img('web').parent, { name: 'base', ref: 'base@stable' });
  assert.equal(img('ext').externalParent, 'other@stable');
  assert.equal(img('ext').parent, undefined);
  assert.deepEqual(img('api').publish, ['gce']);
  assert.equal(img('tools').released, true);
  assert.equal(img('base').version, 'release-0.1.0');
  const text = planText(plan);
  assert.match(text, /^ {2}tools {2}\(tools\) {2}release-0\.1\.0 already released: skipped$/m);
  assert.match(text, /^ {2}ext .* on other@stable \(outside the family: must be released\)$/m);
  assert.match(text, /^ {2}api .* build release-0\.1\.0, on web@stable \(after its build; the pipeline does not move channels: `kiln channel set` does\); then publish to gce$/m);

  // GitLab: base and ext share a matrix job (same stage, no family parent, no child of ext... but base has children: its own job).
  const gl = parse(gitlabPipeline(plan)) as Record<string, { stage?: string; needs?: (string | { job: string; parallel?: { matrix: { IMAGE: string; DIR: string }[] } })[]; parallel?: { matrix: { IMAGE: string; DIR: string }[] }; variables?: { IMAGE: string; DIR: string }; script?: string[] }> & { stages: string[] };
  assert.deepEqual(gl.stages, ['build-1', 'build-2', 'build-3', 'publish']);
  const jobs = Object.keys(gl).filter((k) => !['variables', 'stages'].includes(k));
  assert.deepEqual(jobs.sort(), ['build:api', 'build:base', 'build:ext', 'build:web', 'build:worker', 'publish:api:gce'].sort());
  assert.equal(gl['build:tools' as 'stages'], undefined, 'a released image has no job');
  // web has a child (api), so it is not in a matrix; worker alone in its group then.
  const imagesOf = (j: string) => gl[j].parallel ? gl[j].parallel!.matrix.map((m) => m.IMAGE) : [gl[j].variables!.IMAGE];
  const edges = jobs.flatMap((j) => (gl[j].needs ?? []).flatMap((n) => imagesOf(typeof n === 'string' ? n : n.job).filter((x) => typeof n === 'string' || n.parallel!.matrix.some((m) => m.IMAGE === x)).flatMap((parent) => imagesOf(j).map((child) => `${parent}->${child}${j.startsWith('publish') ? ' (publish)' : ''}`))));
  assert.deepEqual(edges.sort(), ['api->api (publish)', 'base->web', 'base->worker', 'web->api'].sort());
  for (const j of jobs) assert.ok(gl[j].script!.every((l) => l === 'cd "$DIR"' || /^\$KILN (build|publish) /.test(`${l} `)), `${j} calls kiln build or kiln publish only`);
  assert.deepEqual(gl['publish:api:gce'].script, ['cd "$DIR"', '$KILN publish "$IMAGE@release-0.1.0" --to gce']);
  // A build job run again, or racing another runner for its version, compares instead of failing on "already released".
  assert.deepEqual(gl['build:base'].script, ['cd "$DIR"', '$KILN build --if-released verify']);
  assert.equal((gl as unknown as { variables: Record<string, string> }).variables.KILN_CACHE_REMOTE, undefined);
  const cached = parse(gitlabPipeline(plan, { cache: 'oci://registry.example:5000/ci' })) as { variables: Record<string, string> };
  assert.equal(cached.variables.KILN_CACHE_REMOTE, 'oci://registry.example:5000/ci');
  assert.equal((parse(githubWorkflow(plan, { cache: 'oci://registry.example:5000/ci' })) as { env: Record<string, string> }).env.KILN_CACHE_REMOTE, 'oci://registry.example:5000/ci');

  // GitHub: the same edges by job id.
  const gh = parse(githubWorkflow(plan)) as { jobs: Record<string, { needs?: string[]; strategy: { matrix: { include: { image: string }[] } }; steps: { run?: string }[] }> };
  const ghImages = (id: string) => gh.jobs[id].strategy.matrix.include.map((m) => m.image);
  const ghEdges = Object.entries(gh.jobs).flatMap(([id, j]) => (j.needs ?? []).flatMap((n) => ghImages(n).flatMap((p) => ghImages(id).map((c) => `${p}->${c}${id.startsWith('publish') ? ' (publish)' : ''}`))));
  assert.deepEqual(ghEdges.sort(), ['api->api (publish)', 'base->web', 'base->worker', 'web->api'].sort());
  assert.ok(Object.values(gh.jobs).every((j) => j.steps.filter((s) => s.run).every((s) => /^kiln (build|publish) ?/.test(s.run!))));
});

test('siblings that build the same way share one matrix job; its children need exactly their parent\'s entry', async () => {
  const d = join(work, 'siblings');
  cpSync(join(ROOT, 'examples/family'), d, { recursive: true });
  git(d, 'init', '-q');
  git(d, 'add', '-A');
  git(d, 'commit', '-qm', 'x');
  git(d, 'tag', 'release-0.2.0');
  const plan = await makePlan(familyFiles([d]), { cwd: d, released: async () => false });
  const gl = parse(gitlabPipeline(plan)) as Record<string, { needs?: unknown[]; parallel?: { matrix: { IMAGE: string; DIR: string }[] } }>;
  assert.deepEqual(gl['build:stage2:web+worker'].parallel?.matrix, [{ IMAGE: 'web', DIR: 'web' }, { IMAGE: 'worker', DIR: 'worker' }]);
  assert.deepEqual(gl['build:stage2:web+worker'].needs, ['build:base']);
  // Nothing to build (all released): one no-op job, so the pipeline is still valid.
  const none = await makePlan(familyFiles([d]), { cwd: d, released: async () => true });
  const empty = parse(gitlabPipeline(none)) as Record<string, unknown> & { stages: string[] };
  assert.deepEqual(empty.stages, ['plan']);
  assert.ok(empty['nothing-to-build']);
  // No release tag at HEAD: no job, and the text says why.
  git(d, 'tag', '-d', 'release-0.2.0');
  const untagged = await makePlan(familyFiles([d]), { cwd: d, released: async () => false });
  assert.match(planText(untagged), /base .* no release tag at HEAD: its build job would refuse/);
  assert.ok((parse(gitlabPipeline(untagged)) as Record<string, unknown>)['nothing-to-build']);
});

test('a cycle of parents and two images of one name are errors naming the file; the command writes the pipeline', async () => {
  const cyc = family('cycle', { extra: (d) => writeFileSync(join(d, 'base', 'kiln.yaml'), readFileSync(join(d, 'base', 'kiln.yaml'), 'utf8').replace(/source:\n  debian:\n    suite: trixie\n/, 'source:\n  release:\n    ref: api@stable\n    store: ../store\n')) });
  await assert.rejects(makePlan(familyFiles([cyc]), { cwd: cyc, released: async () => false }), (e: Error & { where?: { file?: string } }) => {
    assert.match(e.message, /the family's parents form a cycle: (\w+ -> )+\w+/);
    assert.match(e.message, /api -> web -> base -> api|base -> api -> web -> base|web -> base -> api -> web/);
    assert.ok(e.where?.file?.endsWith('kiln.yaml'));
    return true;
  });
  const dup = family('dup', { extra: (d) => writeFileSync(join(d, 'tools', 'kiln.yaml'), readFileSync(join(d, 'tools', 'kiln.yaml'), 'utf8').replace(/^name: tools$/m, 'name: web')) });
  await assert.rejects(makePlan(familyFiles([dup]), { cwd: dup, released: async () => false }), /two images of the family are named web/);
  const d = family('cli');
  const out = join(d, 'ci', 'generated', 'pipeline.yml'); // a folder that does not exist yet
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/kiln.js'), 'plan', '.', '--emit', 'gitlab', '--out', out], { cwd: d, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok((parse(readFileSync(out, 'utf8')) as Record<string, unknown>)['build:base']);
  assert.match(r.stderr, /^family: 6 image\(s\) in 3 stage\(s\)$/m);
  const bad = spawnSync(process.execPath, [join(ROOT, 'bin/kiln.js'), 'plan', '--emit', 'jenkins'], { cwd: d, encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--emit: expected gitlab or github, got "jenkins"/);
  const badCache = spawnSync(process.execPath, [join(ROOT, 'bin/kiln.js'), 'plan', '--emit', 'gitlab', '--cache', 'https://registry.example/ci'], { cwd: d, encoding: 'utf8' });
  assert.equal(badCache.status, 2);
  assert.match(badCache.stderr, /--cache: expected oci:\/\/host\[:port\]\/prefix, got "https:\/\/registry.example\/ci"/);
});
