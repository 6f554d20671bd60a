/**
 * lock: the build's lock step: when kiln.lock exists beside kiln.yaml, the build installs exactly its
 * package set. The step gets the locked .debs into the cache (verified), indexes them and serves
 * them as a local repository that the source and provision steps install from instead of the mirror.
 * A lock of an upstream (a vendor image, a parent release) serves no packages: the source step checks
 * the image against the lock's digests, or resolves the parent by the lock's digest.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../../errors.js';
import type { InstalledPackage, LockedBase } from '../../source/debian.js';
import { step, type BuildEnv, type LockState } from '../context.js';
import type { KilnConfig } from '../../template/schema.js';
import { archiveSet, describeLock, LOCK_FORMAT, lockPath, packageKey, packageSetDigest, readLock, type LockedSet, type LockFile } from '../../lock/file.js';
import { shownUrl } from '../../source/image.js';
import { ansibleCoreVersion, cachedToolsFor, type Controller } from '../../sandbox/tools.js';

export const lockStep = step({
  name: 'lock',
  describe: "kiln.lock: verify its signed InRelease and index chain, get the locked .debs (sha256-verified) and serve them as the only repository; or read the upstream image or release it pins",
  reads: ['source'],
  provides: ['lock'],
  skip: (ctx) => ctx.options.lock === 'ignore' || !existsSync(lockPath(ctx.template.dir)),
  async run(ctx, p) {
    const file = lockPath(ctx.template.dir);
    const { lock, sha256 } = readLock(file);
    const c = ctx.template.config;
    checkLockMatches(lock, c, file);
    const d = c.source.debian;
    const set = archiveSet(lock);
    const chain = { lockFile: file, debian: d, cacheDir: ctx.cacheDir, logger: ctx.logger };
    // Both chains are checked before anything is fetched.
    if (set) p.status('verifying the signed InRelease and Packages index chain of kiln.lock');
    const trust = set ? await ctx.drivers.verifyLockedSet(set, chain) : undefined;
    const toolsTrust = lock.tools ? await ctx.drivers.verifyLockedSet(lock.tools, { ...chain, tools: true }) : undefined;
    ctx.lock = { file, sha256, lock, ...(toolsTrust ? { toolsTrust } : {}) };
    if (!set || !trust) {
      p.log(`kiln.lock ${sha256.slice(0, 12)} pins ${describeLock(lock)}`);
      return;
    }
    const got = await ctx.drivers.fetchLockedDebs(set, { cacheDir: ctx.cacheDir, mirror: d.mirror, snapshot: d.snapshot, logger: ctx.logger, onStatus: (s) => p.status(s) });
    p.status('indexing the locked packages');
    const index = await ctx.drivers.lockedPackagesIndex(set, ctx.cacheDir, ctx.logger);
    const repo = await ctx.drivers.serveLockedRepo(set, ctx.cacheDir, index, join(ctx.workDir, 'locked-repo'));
    ctx.lock.archive = { set, repo, trust };
    const fetched = got.fromMirror + got.fromSnapshot.length;
    p.log(`${set.packages.length} locked packages (kiln.lock ${sha256.slice(0, 12)}): ${got.cached + got.reused} cached, ${fetched} downloaded${got.fromSnapshot.length ? `, ${got.fromSnapshot.length} from the snapshot mirror` : ''}`);
  },
  async cleanup(ctx) {
    await ctx.lock?.archive?.repo.close();
  },
});

/**
 * kiln.lock must pin what kiln.yaml builds from: the same suite of the archive, the same vendor
 * image URL, the same parent reference. Anything else was locked for another kiln.yaml.
 */
export function checkLockMatches(lock: LockFile, c: KilnConfig, file: string): void {
  if (lock.lock === 1) {
    throw new KilnError('kiln.lock is format 1: it has no signed InRelease to check the packages against', { where: { file }, hint: `run \`kiln lock --update\` (it writes format ${LOCK_FORMAT} and kiln.lock.d/) and commit both` });
  }
  const update = { where: { file }, hint: 'run `kiln lock --update` and commit kiln.lock' };
  const s = c.source;
  const what = { archive: 'a Debian archive package set', image: 'a vendor image (source.image)', release: 'a parent release (source.release)' };
  const wants = s.image ? 'image' : s.release ? 'release' : 'archive';
  const has = lock.upstream?.image ? 'image' : lock.upstream?.release ? 'release' : 'archive';
  if (wants !== has) throw new KilnError(`kiln.lock pins ${what[has]}, but kiln.yaml builds from ${what[wants]}`, update);
  if (lock.archive && lock.archive.suite !== s.debian.suite) throw new KilnError(`kiln.lock was written for ${lock.archive.suite}, but kiln.yaml builds ${s.debian.suite}`, update);
  if (lock.upstream?.image && s.image && lock.upstream.image.url !== shownUrl(s.image.url)) {
    throw new KilnError(`kiln.lock pins the image ${lock.upstream.image.url}, but kiln.yaml names ${shownUrl(s.image.url)} (source.image.url)`, update);
  }
  if (lock.upstream?.release && s.release && lock.upstream.release.ref !== s.release.ref) {
    throw new KilnError(`kiln.lock pins the parent ${lock.upstream.release.ref}, but kiln.yaml names ${s.release.ref} (source.release.ref)`, update);
  }
}

export function lockedBase(a: NonNullable<LockState['archive']>): LockedBase {
  return { sourcesLine: a.repo.sourcesLine, packageSet: packageSetDigest(a.set), sourceDateEpoch: a.trust.archiveDate };
}

/**
 * Turns apt's "not available" failures in a locked build into an error naming the package and the
 * lock. Other errors are returned as they are.
 */
export function explainLockedFailure(e: unknown, s: LockedSet): unknown {
  if (!(e instanceof KilnError)) return e;
  const text = `${e.message}\n${e.detail ?? ''}`;
  const m = /No package matching '([^']+)' is available/.exec(text)
    ?? /Unable to locate package ([^\s'"]+)/.exec(text)
    ?? /Package '?([^\s']+)'? has no installation candidate/.exec(text)
    ?? /Version '[^']+' for '([^']+)' was not found/.exec(text);
  if (!m) {
    if (/unmet dependencies|Depends: /.test(text)) {
      return new KilnError(`${e.message} (a locked build installs only what kiln.lock lists; a dependency is not locked)`, { where: e.where, detail: e.detail, hint: 'run `kiln lock --update` to add it to kiln.lock, then commit kiln.lock' });
    }
    return e;
  }
  const name = m[1];
  const locked = s.packages.filter((p) => p.name === name.split('=')[0]);
  const what = locked.length ? `${name}: kiln.lock has ${locked.map((p) => `${p.name} ${p.version}`).join(', ')}, not the version asked for` : `package '${name}' is not in kiln.lock`;
  return new KilnError(`the playbook asked for a package outside the lock: ${what}`, {
    where: e.where,
    detail: `${e.message}\n${e.detail ?? ''}`.trim(),
    hint: 'a build with kiln.lock installs exactly the locked packages: run `kiln lock --update` to re-resolve (it shows what changes), then commit kiln.lock',
  });
}

/** Installed packages that are not the locked version (must be none), and locked packages not installed. */
export function compareInstalled(installed: InstalledPackage[], lock: LockedSet): { unlocked: string[]; unused: string[] } {
  const locked = new Map(lock.packages.map((p) => [packageKey(p), p]));
  const seen = new Set<string>();
  const unlocked: string[] = [];
  for (const i of installed) {
    const k = `${i.name}:${i.arch}`;
    seen.add(k);
    const l = locked.get(k);
    if (!l || l.version !== i.version) unlocked.push(`${i.name} ${i.version} (${i.arch})`);
  }
  const unused = lock.packages.filter((p) => !seen.has(packageKey(p))).map((p) => `${p.name} ${p.version}`);
  return { unlocked, unused };
}

/**
 * A locked build's tools tree: the pinned .debs (fetched and sha256-checked like the image's),
 * served to mmdebstrap as the only repository, and the result compared with the pins.
 */
export async function lockedController(ctx: BuildEnv, lock: LockState, onStatus: (s: string) => void): Promise<Controller> {
  const c = ctx.template.config;
  const pins = lock.lock.tools;
  if (c.provision.ansible === 'host') return ctx.drivers.hostController();
  if (!pins) {
    throw new KilnError(`kiln.lock pins no tools tree, but kiln.yaml runs Ansible from a ${c.provision.ansible} tools tree`, {
      where: { file: lock.file }, hint: 'run `kiln lock --update` (it pins the tools tree too) and commit kiln.lock, or set provision.ansible: host',
    });
  }
  if (pins.archive.suite !== c.provision.ansible) {
    throw new KilnError(`kiln.lock pins a ${pins.archive.suite} tools tree, but kiln.yaml asks for ${c.provision.ansible} (provision.ansible)`, { where: { file: lock.file }, hint: 'run `kiln lock --update`' });
  }
  const trust = lock.toolsTrust;
  if (!trust) throw new Error('the lock step verified no tools pins, but the lock has them');
  const cached = cachedToolsFor(ctx.cacheDir, c.provision.ansible, pins, trust, ctx.logger);
  if (cached) return { root: cached.root, ansibleCore: ansibleCoreVersion(cached.packages), tools: cached };
  const d = c.source.debian;
  await ctx.drivers.fetchLockedDebs(pins, { cacheDir: ctx.cacheDir, mirror: pins.archive.mirror, snapshot: d.snapshot, logger: ctx.logger, onStatus });
  const index = await ctx.drivers.lockedPackagesIndex(pins, ctx.cacheDir, ctx.logger);
  const repo = await ctx.drivers.serveLockedRepo(pins, ctx.cacheDir, index, join(ctx.workDir, 'locked-tools-repo'));
  try {
    const controller = await ctx.drivers.controllerFor(c, ctx.cacheDir, ctx.workDir, ctx.logger, onStatus, {
      sourcesLine: repo.sourcesLine, packageSet: packageSetDigest(pins), trust,
    }, ctx.remoteCache);
    if (!controller.tools) throw new Error(`controllerFor gave no tools tree for provision.ansible: ${c.provision.ansible}`);
    const { unlocked } = compareInstalled(controller.tools.packages, pins);
    if (unlocked.length) throw new KilnError(`the tools tree has ${unlocked.length} package(s) kiln.lock does not pin: ${unlocked.slice(0, 5).join(', ')}`, { where: { file: lock.file }, hint: 'run `kiln lock --update`' });
    return controller;
  } finally {
    await repo.close();
  }
}
