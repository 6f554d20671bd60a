/**
 * A plan as a CI pipeline: GitLab CI (.gitlab-ci.yml: stages, `needs:` edges, `parallel:matrix` for
 * images of one stage that build the same way) or GitHub Actions (jobs with `needs:`, a matrix for the
 * same groups). Jobs run `kiln build` and `kiln publish` in the image's folder and nothing else; no job
 * keeps artifacts in CI storage: releases go to each image's store (a registry in a real pipeline).
 * Written with the yaml library, never by string pasting: a folder name cannot inject YAML.
 */
import { stringify } from 'yaml';
import type { Plan, PlannedImage } from './index.js';

/**
 * How the jobs build: `cache`, a registry every runner shares as its step cache (KILN_CACHE_REMOTE).
 * A build job runs `kiln build --if-released verify`: a job run again, or two runners racing for a
 * version, pass when the release there has the same artifacts and fail on a conflict, never
 * overwriting it (src/store/release-store.ts publish).
 */
export interface EmitOptions { cache?: string }

const BUILD = 'build --if-released verify';

/** Images built by this pipeline: tagged and not released yet. */
function toBuild(p: Plan): PlannedImage[] {
  return p.images.filter((i) => i.version && !i.released);
}

interface Group { stage: number; images: PlannedImage[]; needs: string[] }

/**
 * Build jobs: images of one stage with the same family parent (or none) and no child built in this
 * pipeline share one matrix job; the others have a job each.
 */
function groups(p: Plan): Group[] {
  const built = toBuild(p);
  const names = new Set(built.map((i) => i.name));
  const hasChild = (i: PlannedImage) => built.some((c) => c.parent?.name === i.name);
  const out: Group[] = [];
  for (const i of built) {
    const needs = i.parent && names.has(i.parent.name) ? [i.parent.name] : [];
    const g = !hasChild(i) && out.find((x) => x.stage === i.stage && x.needs.join() === needs.join() && !x.images.some(hasChild));
    if (g) g.images.push(i);
    else out.push({ stage: i.stage, images: [i], needs });
  }
  return out;
}

const slug = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '-');

/** The job that builds `name`, for needs: its own job, or the matrix job with its IMAGE. */
function buildJobOf(gs: Group[], name: string): { job: string; matrix: boolean } {
  const g = gs.find((x) => x.images.some((i) => i.name === name)) as Group;
  return g.images.length > 1 ? { job: `build:stage${g.stage}:${g.images.map((i) => i.name).join('+')}`, matrix: true } : { job: `build:${name}`, matrix: false };
}

export function gitlabPipeline(p: Plan, o: EmitOptions = {}): string {
  const gs = groups(p);
  const jobs: Record<string, unknown> = {};
  const stages = [...new Set(gs.map((g) => `build-${g.stage}`))];
  // A job of a matrix is named by every variable of its entry: both, to need exactly it.
  const needsOf = (name: string) => {
    const b = buildJobOf(gs, name);
    const i = p.images.find((x) => x.name === name) as PlannedImage;
    return b.matrix ? { job: b.job, parallel: { matrix: [{ IMAGE: name, DIR: i.dir }] } } : b.job;
  };
  for (const g of gs) {
    const job = buildJobOf(gs, g.images[0].name).job;
    jobs[job] = {
      stage: `build-${g.stage}`,
      ...(g.needs.length ? { needs: g.needs.map(needsOf) } : { needs: [] }),
      ...(g.images.length > 1 ? { parallel: { matrix: g.images.map((i) => ({ IMAGE: i.name, DIR: i.dir })) } } : { variables: { IMAGE: g.images[0].name, DIR: g.images[0].dir } }),
      script: ['cd "$DIR"', `$KILN ${BUILD}`],
    };
  }
  const publishes = toBuild(p).flatMap((i) => i.publish.map((c) => ({ i, c })));
  if (publishes.length) stages.push('publish');
  for (const { i, c } of publishes) {
    jobs[`publish:${i.name}:${c}`] = {
      stage: 'publish', needs: [needsOf(i.name)], variables: { IMAGE: i.name, DIR: i.dir },
      script: ['cd "$DIR"', `$KILN publish "$IMAGE@${i.version}" --to ${c}`],
    };
  }
  if (!gs.length) {
    stages.push('plan');
    jobs['nothing-to-build'] = { stage: 'plan', script: ['echo "every image of the family is released at its tag, or has no release tag at HEAD"'] };
  }
  const doc = {
    // The whole history and its tags: the version is the tag at HEAD, the date the commit's.
    variables: { GIT_DEPTH: '0', KILN: 'kiln', ...(o.cache ? { KILN_CACHE_REMOTE: o.cache } : {}) },
    stages,
    ...jobs,
  };
  return `# Written by kiln plan --emit gitlab (${p.images.length} images; ${summary(p)}). Jobs call kiln build and kiln publish only;\n# releases go to each image's store, nothing to CI artifacts.\n${stringify(doc, { lineWidth: 0 })}`;
}

export function githubWorkflow(p: Plan, o: EmitOptions = {}): string {
  const gs = groups(p);
  const id = (g: Group) => slug(buildJobOf(gs, g.images[0].name).job.replace(/:/g, '-'));
  const idOf = (name: string) => id(gs.find((x) => x.images.some((i) => i.name === name)) as Group);
  const steps = (run: string) => [
    { uses: 'actions/checkout@v4', with: { 'fetch-depth': 0 } },
    { name: run, 'working-directory': '${{ matrix.dir }}', run },
  ];
  const jobs: Record<string, unknown> = {};
  for (const g of gs) {
    jobs[id(g)] = {
      'runs-on': ['self-hosted', 'linux', 'kiln'],
      ...(g.needs.length ? { needs: g.needs.map(idOf) } : {}),
      strategy: { 'fail-fast': false, matrix: { include: g.images.map((i) => ({ image: i.name, dir: i.dir })) } },
      steps: steps(`kiln ${BUILD}`),
    };
  }
  for (const i of toBuild(p)) {
    for (const c of i.publish) {
      jobs[slug(`publish-${i.name}-${c}`)] = {
        'runs-on': ['self-hosted', 'linux', 'kiln'], needs: [idOf(i.name)],
        strategy: { matrix: { include: [{ image: i.name, dir: i.dir }] } },
        steps: steps(`kiln publish ${i.name}@${i.version} --to ${c}`),
      };
    }
  }
  if (!gs.length) jobs['nothing-to-build'] = { 'runs-on': 'ubuntu-latest', steps: [{ run: 'echo "every image of the family is released at its tag, or has no release tag at HEAD"' }] };
  const doc = { name: 'kiln family', on: { push: { tags: ['*'] }, workflow_dispatch: {} }, ...(o.cache ? { env: { KILN_CACHE_REMOTE: o.cache } } : {}), jobs };
  return `# Written by kiln plan --emit github (${p.images.length} images; ${summary(p)}). Runners labelled kiln: Debian 12 with Kiln's host tools, root.\n${stringify(doc, { lineWidth: 0 })}`;
}

function summary(p: Plan): string {
  const b = toBuild(p).length;
  const r = p.images.filter((i) => i.released).length;
  const u = p.images.filter((i) => !i.version).length;
  return `${b} to build, ${r} released already${u ? `, ${u} without a release tag at HEAD` : ''}`;
}
