/**
 * `kiln lock`: run the build through provisioning against the mirror as it is today (a snapshot
 * version, the existing lock ignored), then record the final package set with each .deb's sha256
 * from the signed Packages index that apt verified in the tree.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from '../build/index.js';
import { fetchSourceStep, imageLayerStep, provisionStep, resolveVersionStep, toolsStep, workAreaStep } from '../build/steps-prepare.js';
import type { BuildContext } from '../build/context.js';
import { KilnError } from '../errors.js';
import { writeFileDurable } from '../fsio.js';
import type { Logger } from '../log.js';
import type { Step } from '../pipeline/runner.js';
import { installedPackages } from '../source/debian.js';
import type { LoadedTemplate } from '../template/load.js';
import { diffLocks, formatLock, LOCK_FORMAT, type LockChange, type LockedSet, type LockFile } from './file.js';
import { signedPackagesIndex } from './archive-index.js';
import type { ToolsTree } from '../sandbox/tools.js';
import { aptListName, lockEntries, parsePackagesIndex } from './packages-index.js';
import { lockPath, readLock } from './step.js';

/** The lock of the package set in ctx.root, from the index files apt fetched into the cache. */
export async function lockOfTree(ctx: BuildContext): Promise<LockFile> {
  const d = ctx.template.config.source.debian;
  const lists = join(ctx.cacheDir, 'apt-lists');
  const inRelease = join(lists, aptListName(d.mirror, `dists/${d.suite}/InRelease`));
  if (!existsSync(inRelease)) throw new KilnError(`apt's copy of the archive's InRelease is missing (${inRelease})`, { hint: 'the provisioning step runs apt-get update against source.debian.mirror; run kiln lock again' });
  const inText = readFileSync(inRelease);
  const date = /^Date: (.*)$/m.exec(inText.toString('utf8'))?.[1];
  const index = new Map();
  for (const c of d.components) {
    const f = join(lists, aptListName(d.mirror, `dists/${d.suite}/${c}/binary-amd64/Packages`));
    if (!existsSync(f)) throw new KilnError(`the Packages index of ${d.suite}/${c} is not in apt's lists (${f})`, { hint: 'run kiln lock again' });
    parsePackagesIndex(readFileSync(f, 'utf8'), index);
  }
  const packages = lockEntries(await installedPackages(ctx.root), index);
  const tools = ctx.controller?.tools;
  return {
    lock: LOCK_FORMAT,
    image: ctx.template.config.name,
    archive: {
      mirror: d.mirror, suite: d.suite, components: d.components,
      date: date ? Math.floor(Date.parse(date) / 1000) : ctx.trust!.archiveDate,
      inRelease: createHash('sha256').update(inText).digest('hex'),
      signedBy: ctx.trust?.signingKeyFingerprint, verified: Boolean(ctx.trust?.verified),
    },
    packages,
    ...(tools ? { tools: await lockOfTools(tools, d.mirror, ctx.workDir, ctx.logger) } : {}),
  };
}

/** The tools tree's pins: its installed packages, each with the sha256 the signed index gives. */
export async function lockOfTools(tools: ToolsTree, mirror: string, workDir: string, logger: Logger): Promise<LockedSet> {
  if (!tools.inReleaseFile) throw new KilnError('the tools tree was built from kiln.lock; `kiln lock` resolves against the archive');
  const index = await signedPackagesIndex({ mirror, suite: tools.suite, components: ['main'], inReleaseFile: tools.inReleaseFile, inReleaseSha256: tools.trust.inReleaseSha256, workDir, logger });
  return {
    archive: {
      mirror, suite: tools.suite, components: ['main'], date: tools.trust.archiveDate, inRelease: tools.trust.inReleaseSha256,
      signedBy: tools.trust.signingKeyFingerprint, verified: tools.trust.verified,
    },
    packages: lockEntries(tools.packages, index),
  };
}

export interface LockResult { file: string; lock: LockFile; previous?: LockFile; changes: LockChange[]; written: boolean }

export async function resolveLock(template: LoadedTemplate, logger: Logger, opts: { update: boolean }): Promise<LockResult> {
  const file = lockPath(template.dir);
  const previous = existsSync(file) ? readLock(file).lock : undefined;
  if (previous && !opts.update) {
    throw new KilnError(`${file} already exists`, { hint: '`kiln lock --update` re-resolves it against the mirror and shows what changed, package by package' });
  }
  let lock: LockFile | undefined;
  const collect: Step<BuildContext> = {
    name: 'lock',
    describe: 'record the installed packages with the sha256 of each .deb from the signed index',
    async run(ctx, p) {
      lock = await lockOfTree(ctx);
      p.log(`${lock.packages.length} packages`);
    },
  };
  await build(template, { snapshot: true, onError: 'cleanup', noRelease: true, lock: 'ignore' }, logger,
    [resolveVersionStep, workAreaStep, fetchSourceStep, toolsStep, imageLayerStep, provisionStep, collect]);
  const changes = diffLocks(previous, lock!);
  const text = formatLock(lock!);
  const written = !existsSync(file) || readFileSync(file, 'utf8') !== text;
  // kiln.lock is committed: a crash or power loss must leave the old lock or the new one, whole.
  if (written) writeFileDurable(file, text);
  return { file, lock: lock!, previous, changes, written };
}
