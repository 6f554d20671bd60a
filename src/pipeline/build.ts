/**
 * `kiln build`: the whole pipeline as one list of steps. Read the list to know what Kiln does.
 */
import { RemoteCache } from './remote-cache.js';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { quoteArg } from '../exec.js';
import { humanBytes, humanSeconds, type Logger } from '../log.js';
import { cacheLimit } from './step-cache.js';
import { checkPlan, PlanError } from './plan.js';
import { runSteps, type StepRecord } from './runner.js';
import type { LoadedTemplate } from '../template/load.js';
import { KILN_VERSION } from '../version.js';
import type { BuildContext, BuildOptions, BuildState, BuildStep } from './context.js';
import { realDrivers, type Drivers } from './drivers.js';
import { writeBuildRecord } from './outputs.js';
import { buildSteps } from './steps/index.js';

export interface BuildRecord {
  kiln: string;
  name: string;
  version: string;
  snapshot: boolean;
  commit: string;
  tag?: string;
  sourceDateEpoch: number;
  template: string;
  source: BuildState['source'];
  provision: BuildState['provision'];
  packages: BuildState['packages'];
  seal?: BuildState['seal'];
  disk?: NonNullable<BuildState['disk']>['layout'];
  artifacts: NonNullable<BuildState['artifacts']>;
  release?: BuildState['release'];
  steps: StepRecord[];
  durationMs: number;
  outDir: string;
}

/** Ensures .kiln exists and is ignored by git (so builds never make the tree dirty). */
export function kilnDirFor(dir: string): string {
  const k = join(dir, '.kiln');
  mkdirSync(k, { recursive: true });
  const gi = join(k, '.gitignore');
  if (!existsSync(gi)) writeFileSync(gi, '*\n');
  return k;
}

/** A build's context before its first step; `drivers` is for unit tests of the steps that run host tools. */
export function newContext(template: LoadedTemplate, options: BuildOptions, logger: Logger, drivers: Drivers = realDrivers): BuildContext {
  const kilnDir = kilnDirFor(template.dir);
  const buildId = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${process.pid}`;
  const workDir = join(kilnDir, 'work', buildId);
  const cacheDir = options.cacheDir ?? process.env.KILN_CACHE_DIR ?? join(kilnDir, 'cache');
  return {
    template, options, logger, kilnDir,
    cacheDir,
    ...(options.remoteCache && !options.noCache ? { remoteCache: new RemoteCache(options.remoteCache, join(cacheDir, 'remote-push'), logger, { signer: options.remoteCacheSigner, trust: options.remoteCacheTrust }) } : {}),
    workDir, root: join(workDir, 'root'), stagingDir: join(workDir, 'out'),
    buildId, startedAt: Date.now(), stepTimes: [], drivers,
  };
}

/** Runs the steps (the whole build, or a partial pipeline such as `kiln lock`'s) after checking their plan. */
export async function build(template: LoadedTemplate, options: BuildOptions, logger: Logger, steps: readonly BuildStep[] = buildSteps): Promise<BuildRecord> {
  checkPlan(steps);
  const ctx = newContext(template, options, logger);
  let result: Awaited<ReturnType<typeof runSteps>>;
  try {
    result = await runSteps(steps, ctx, {
      logger,
      keepOnError: options.onError === 'keep',
      onStepDone: (r) => ctx.stepTimes.push({ name: r.name, durationMs: r.durationMs }),
      onFailure: (step) => {
        if (options.onError === 'keep') printKeepHelp(ctx, step, logger);
      },
    });
  } catch (e) {
    // A failed or interrupted build pushes nothing more: what is mid-upload is abandoned untagged.
    await ctx.remoteCache?.cancel();
    throw e;
  }
  const remote = ctx.remoteCache;
  if (remote) {
    if (remote.push) logger.info(`cache: pushing to ${remote.location}…`);
    await remote.flush();
    const s = remote.stats;
    logger.info(`cache ${remote.location}: ${s.hits.length} from it${s.hits.length ? ` (${s.hits.join(', ')})` : ''}${s.signers.length ? `, signed by ${s.signers.join(', ')}` : ''}; ${remote.push ? `${s.pushed.length} pushed${s.failed.length ? `, ${s.failed.length} failed` : ''}` : `pushing off: ${remote.pushOff}`}`);
  }
  const record = recordOf(ctx, result.steps, result.durationMs);
  if (ctx.outDir) writeBuildRecord(ctx.outDir, record);
  if (ctx.cache) {
    // Bounded: the least recently used entries go once the cache is over its limit.
    const pruned = ctx.cache.store.prune(cacheLimit());
    if (pruned.removed.length) logger.info(`cache: removed ${pruned.removed.length} least recently used entr${pruned.removed.length === 1 ? 'y' : 'ies'} (limit ${humanBytes(cacheLimit())}, KILN_CACHE_MAX_SIZE)`);
  }
  return record;
}

function recordOf(ctx: BuildContext, steps: StepRecord[], durationMs: number): BuildRecord {
  const v = ctx.version;
  if (!v) throw new PlanError('the build finished without a version: the pipeline has no version step');
  return {
    kiln: KILN_VERSION, name: ctx.template.config.name, version: v.version, snapshot: v.snapshot, commit: v.commit, tag: v.tag,
    sourceDateEpoch: v.sourceDateEpoch, template: v.templatePath, source: ctx.source, provision: ctx.provision, packages: ctx.packages,
    seal: ctx.seal, disk: ctx.disk?.layout, artifacts: ctx.artifacts ?? [], release: ctx.release, steps, durationMs, outDir: ctx.outDir ?? '',
  };
}

function printKeepHelp(ctx: BuildContext, step: string, logger: Logger): void {
  logger.info('');
  logger.info(`--on-error=keep: stopped at step '${step}'; the work tree is kept at ${ctx.workDir}`);
  if (existsSync(join(ctx.workDir, 'sandbox.json')) && existsSync(join(ctx.root, 'bin/sh'))) {
    logger.info('open a shell in the image tree, in the same build sandbox as the playbook had (add `-- command` to run one):');
    logger.info(`  kiln shell ${quoteArg(ctx.workDir)}`);
  } else if (existsSync(ctx.root)) {
    logger.info(`the image tree is at ${ctx.root}`);
  }
  logger.info('clean up afterwards (nothing is mounted outside that shell):');
  logger.info(`  rm -rf ${quoteArg(ctx.workDir)}`);
}

export function printSummary(r: BuildRecord, logger: Logger): void {
  logger.info('');
  logger.info(`built ${r.name}@${r.version}${r.snapshot ? ' (snapshot: not releasable)' : ''} in ${humanSeconds(r.durationMs)}`);
  for (const s of r.steps) logger.info(`  ${s.name.padEnd(12)} ${s.status.padEnd(8)} ${humanSeconds(s.durationMs)}`);
  if (r.artifacts.length) {
    logger.info('artifacts:');
    for (const a of r.artifacts) logger.info(`  ${a.format.padEnd(6)} ${humanBytes(a.size).padStart(10)}  sha256:${a.sha256}  ${a.file}`);
  }
  if (r.release) logger.info(`released: ${r.release.ref} (${r.release.digest}) in ${r.release.store}${r.release.identical ? ': it was released already, with the same artifacts' : ''}`);
}

