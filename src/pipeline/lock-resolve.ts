/**
 * `kiln lock`: run the build through provisioning against the mirror as it is today (a snapshot
 * version, the existing lock ignored), then record the final package set with each .deb's sha256
 * from the archive's Packages index, chained to its signature: the InRelease apt used is verified
 * with gpgv (apt's lists are a shared cache the build could write, so nothing in them is taken on
 * trust), each index must have the sha256 its signed text gives, and that InRelease is kept as
 * kiln.lock.d/<sha256>.InRelease for locked builds to verify again.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from './build.js';
import { configureStep, provisionStep, sourceStep, toolsStep, versionStep, workAreaStep } from './steps/index.js';
import { step, type BuildEnv, type BuildState, type BuildStep } from './context.js';
import { KilnError } from '../errors.js';
import { writeFileDurable } from '../fsio.js';
import type { Logger } from '../log.js';
import { installedPackages, readArchiveInRelease, type InstalledPackage } from '../source/debian.js';
import { checkFreshness } from '../source/inrelease.js';
import type { KilnConfig } from '../template/schema.js';
import type { LoadedTemplate } from '../template/load.js';
import { describeLock, diffLocks, formatLock, inReleasePath, LOCK_DIR, LOCK_FORMAT, LOCK_FORMAT_UPSTREAM, lockPath, readLock, type LockChange, type LockedSet, type LockedUpstream, type LockFile } from '../lock/file.js';
import { packagesIndex } from '../lock/archive-index.js';
import type { ToolsTree } from '../sandbox/tools.js';
import { aptListName, lockEntries, parsePackagesIndex, type IndexEntry } from '../lock/packages-index.js';

/** A resolved set with the InRelease file it came from (to keep in kiln.lock.d). */
export interface ResolvedSet { set: LockedSet; inReleaseFile: string }

/**
 * The lock entries of installed, from the archive's InRelease in inReleaseFile (verified, and checked
 * fresh) and each component's Packages index checked against it.
 */
export async function resolveSet(installed: InstalledPackage[], o: {
  debian: KilnConfig['source']['debian']; mirror: string; suite: string; components: string[]; inReleaseFile: string;
  /** apt's copy of a component's index, used when it is the signed one. */
  localIndex?: (component: string) => string; cacheDir: string; logger: Logger; now?: number;
}): Promise<LockedSet> {
  const what = `the InRelease of ${o.mirror} ${o.suite} (${o.inReleaseFile})`;
  const release = await readArchiveInRelease(o.debian, o.inReleaseFile, o.logger, what);
  checkFreshness(release, { maxAge: o.debian.max_age, now: o.now, what });
  const index = new Map<string, IndexEntry>();
  const indexes = [];
  for (const c of o.components) {
    const got = await packagesIndex(release, c, { cacheDir: o.cacheDir, suite: o.suite, mirrors: [o.mirror], localCopy: o.localIndex?.(c), logger: o.logger });
    parsePackagesIndex(got.text, index);
    indexes.push(got.index);
  }
  return {
    archive: {
      mirror: o.mirror, suite: o.suite, components: o.components, date: release.date, inRelease: release.inReleaseSha256,
      ...(release.signedBy ? { signedBy: release.signedBy } : {}), verified: release.verified, indexes,
    },
    packages: lockEntries(installed, index),
  };
}

/** The lock of the package set in ctx.root, from the InRelease apt used (verified here) and the index files. */
export async function lockOfTree(ctx: BuildEnv & Pick<BuildState, 'controller'>): Promise<{ lock: LockFile; inReleases: string[] }> {
  const d = ctx.template.config.source.debian;
  const lists = join(ctx.cacheDir, 'apt-lists');
  const aptInRelease = join(lists, aptListName(d.mirror, `dists/${d.suite}/InRelease`));
  if (!existsSync(aptInRelease)) throw new KilnError(`apt's copy of the archive's InRelease is missing (${aptInRelease})`, { hint: 'the provisioning step runs apt-get update against source.debian.mirror; run kiln lock again' });
  // A copy of its own: the shared lists directory may change between the check and the keeping.
  const inReleaseFile = join(ctx.workDir, 'lock-InRelease');
  copyFileSync(aptInRelease, inReleaseFile);
  const image = await resolveSet(await installedPackages(ctx.root), {
    debian: d, mirror: d.mirror, suite: d.suite, components: d.components, inReleaseFile, cacheDir: ctx.cacheDir, logger: ctx.logger,
    localIndex: (c) => join(lists, aptListName(d.mirror, `dists/${d.suite}/${c}/binary-amd64/Packages`)),
  });
  const tools = ctx.controller?.tools;
  const toolsSet = tools ? await lockOfTools(tools, d, ctx.cacheDir, ctx.logger) : undefined;
  return {
    lock: { lock: LOCK_FORMAT, image: ctx.template.config.name, ...image, ...(toolsSet ? { tools: toolsSet } : {}) },
    inReleases: [inReleaseFile, ...(tools?.inReleaseFile ? [tools.inReleaseFile] : [])],
  };
}

/** The tools tree's pins: its installed packages, each with the sha256 the signed index gives. */
export async function lockOfTools(tools: ToolsTree, d: KilnConfig['source']['debian'], cacheDir: string, logger: Logger): Promise<LockedSet> {
  if (!tools.inReleaseFile) throw new KilnError('the tools tree was built from kiln.lock; `kiln lock` resolves against the archive');
  return resolveSet(tools.packages, { debian: d, mirror: d.mirror, suite: tools.suite, components: ['main'], inReleaseFile: tools.inReleaseFile, cacheDir, logger });
}

/**
 * Keeps the InRelease files of lock in kiln.lock.d (each under its sha256, written durably before
 * kiln.lock names it), then writes kiln.lock, then removes the InRelease files it no longer names.
 */
export function writeLock(file: string, lock: LockFile, inReleases: string[]): boolean {
  const dir = join(file, '..', LOCK_DIR);
  const archives = [...(lock.archive ? [lock.archive] : []), ...(lock.tools ? [lock.tools.archive] : [])];
  if (archives.length) mkdirSync(dir, { recursive: true });
  const named = new Set<string>();
  for (const a of archives) {
    const target = inReleasePath(file, a);
    named.add(target);
    if (existsSync(target)) continue;
    const src = inReleases.find((f) => existsSync(f) && sha256Hex(readFileSync(f)) === a.inRelease);
    if (!src) throw new Error(`writeLock: no InRelease with sha256 ${a.inRelease}`);
    writeFileDurable(target, readFileSync(src));
  }
  const text = formatLock(lock);
  const written = !existsSync(file) || readFileSync(file, 'utf8') !== text;
  // kiln.lock is committed: a crash or power loss must leave the old lock or the new one, whole.
  if (written) writeFileDurable(file, text);
  if (existsSync(dir)) for (const n of readdirSync(dir)) if (n.endsWith('.InRelease') && !named.has(join(dir, n))) rmSync(join(dir, n), { force: true });
  return written;
}

function sha256Hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The build `kiln lock` runs before it reads the tree: no lock step (it resolves against the archive), no disk. */
export const LOCK_STEPS: readonly BuildStep[] = [versionStep, workAreaStep, sourceStep, toolsStep, configureStep, provisionStep];
/**
 * For an image on a vendor image or a parent release, `kiln lock` pins the upstream the source step
 * verified (and the tools tree): no configure, no playbook.
 */
export const UPSTREAM_LOCK_STEPS: readonly BuildStep[] = [versionStep, workAreaStep, sourceStep, toolsStep];

export interface LockResult { file: string; lock: LockFile; previous?: LockFile; changes: LockChange[]; written: boolean }

/** The upstream the source step verified, as kiln.lock pins it. */
export function upstreamOf(source: BuildState['source']): LockedUpstream {
  if (source?.type === 'image') {
    if (!source.verified) throw new KilnError(`kiln lock pins only a verified image, and source.image.verify is false`, { hint: 'pin the image in kiln.yaml (source.image.sha512) or name its signed checksum file; then run kiln lock' });
    return { image: { url: source.url, ...(source.ami ? { ami: source.ami.imageId } : {}), sha256: source.sha256, sha512: source.sha512, size: source.size } };
  }
  if (source?.type === 'release') return { release: { ref: source.ref, name: source.parent.name, version: source.parent.version, digest: source.parent.digest } };
  throw new Error(`upstreamOf: a ${source?.type ?? 'missing'} source has no upstream to pin`);
}

/** The lock of an image on a vendor image or a parent release: the upstream the source step verified, and the tools tree. */
export async function lockOfUpstream(ctx: BuildEnv & Pick<BuildState, 'controller' | 'source'>): Promise<{ lock: LockFile; inReleases: string[] }> {
  const tools = ctx.controller?.tools;
  const toolsSet = tools ? await lockOfTools(tools, ctx.template.config.source.debian, ctx.cacheDir, ctx.logger) : undefined;
  return {
    lock: { lock: LOCK_FORMAT_UPSTREAM, image: ctx.template.config.name, upstream: upstreamOf(ctx.source), ...(toolsSet ? { tools: toolsSet } : {}) },
    inReleases: tools?.inReleaseFile ? [tools.inReleaseFile] : [],
  };
}

export async function resolveLock(template: LoadedTemplate, logger: Logger, opts: { update: boolean }): Promise<LockResult> {
  const file = lockPath(template.dir);
  let written = false;
  const previous = existsSync(file) ? readLock(file).lock : undefined;
  if (previous && !opts.update) {
    throw new KilnError(`${file} already exists`, { hint: '`kiln lock --update` re-resolves it and shows what changed' });
  }
  const c = template.config;
  const upstream = Boolean(c.source.image || c.source.release);
  let lock: LockFile | undefined;
  // The archive's package set is read from the provisioned tree; an upstream is what the source step verified.
  const collect = step({
    name: 'lock',
    describe: upstream
      ? "pin the verified upstream (the vendor image's digests, or the parent release's digest) and the tools tree"
      : 'verify the InRelease apt used and the Packages index against it; record the installed packages with the sha256 of each .deb',
    reads: ['name', 'source'],
    needs: upstream ? ['source'] : ['provision'],
    uses: ['controller'],
    async run(ctx, p) {
      const got = upstream ? await lockOfUpstream(ctx) : await lockOfTree(ctx);
      lock = got.lock;
      // Written here, before the work area that holds the InRelease copies is removed.
      written = writeLock(file, got.lock, got.inReleases);
      p.log(describeLock(got.lock));
    },
  });
  await build(template, { snapshot: true, onError: 'cleanup', noRelease: true, lock: 'ignore' }, logger, [...(upstream ? UPSTREAM_LOCK_STEPS : LOCK_STEPS), collect]);
  const changes = diffLocks(previous, lock!);
  return { file, lock: lock!, previous, changes, written };
}
