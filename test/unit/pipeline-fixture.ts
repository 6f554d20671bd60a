/**
 * A git repository holding an image template, committed and tagged, for tests that run build steps
 * on it one at a time (pipeline-steps.test.ts, pipeline-drivers.test.ts), and contexts over it as
 * `kiln build` makes them.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { silentLogger } from '../../src/log.js';
import { newContext } from '../../src/pipeline/build.js';
import type { BuildContext, BuildOptions, BuildState, BuildStep } from '../../src/pipeline/context.js';
import type { Drivers } from '../../src/pipeline/drivers.js';
import { checkPlan } from '../../src/pipeline/plan.js';
import { runSteps } from '../../src/pipeline/runner.js';
import { loadTemplate } from '../../src/template/load.js';

/** The commit's time: the version step's SOURCE_DATE_EPOCH, fixed so a test can tell it from other dates. */
export const COMMIT_EPOCH = 1_704_067_200;

export interface TemplateRepo {
  /** The repository's top level, with kiln.yaml in it. */
  dir: string;
  git(...args: string[]): string;
  /** A fresh build context for the template, with results of earlier steps given as they would be. */
  context(state?: BuildState, options?: Partial<BuildOptions>, drivers?: Drivers): BuildContext;
}

/** Writes files (relative path -> text) into dir, commits them at COMMIT_EPOCH and tags the commit. */
export function templateRepo(dir: string, files: Record<string, string>, tag = 'release-0.1.0'): TemplateRepo {
  const date = `@${COMMIT_EPOCH} +0000`;
  const git = (...args: string[]) => execFileSync('git', ['-C', dir, '-c', 'user.email=t@kiln.test', '-c', 'user.name=T', ...args], {
    encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date },
  }).trim();
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  git('init', '-q');
  git('add', '.');
  git('commit', '-qm', 'image');
  git('tag', tag);
  return {
    dir,
    git,
    context(state = {}, options = {}, drivers) {
      const ctx = newContext(loadTemplate(join(dir, 'kiln.yaml')), { snapshot: false, onError: 'cleanup', ...options }, silentLogger, drivers);
      return Object.assign(ctx, state);
    },
  };
}

/** Runs steps the way a build does, after proving their plan with `given` already in the context. */
export async function runChecked(steps: readonly BuildStep[], ctx: BuildContext, given: (keyof BuildState)[] = []): Promise<void> {
  checkPlan(steps, given);
  await runSteps(steps, ctx, { logger: silentLogger });
}
