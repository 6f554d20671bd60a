/**
 * lock: the build's lock step: when kiln.lock exists beside kiln.yaml, the build installs exactly its
 * package set. The step gets the locked .debs into the cache (verified), indexes them and serves
 * them as a local repository that the source and provision steps install from instead of the mirror.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../../errors.js';
import type { InstalledPackage, LockedBase } from '../../source/debian.js';
import { step, type BuildEnv, type LockState } from '../context.js';
import type { KilnConfig } from '../../template/schema.js';
import { LOCK_FORMAT, lockPath, packageKey, packageSetDigest, readLock, type LockedSet } from '../../lock/file.js';
import { ansibleCoreVersion, cachedToolsFor, type Controller } from '../../sandbox/tools.js';

export const lockStep = step({
  name: 'lock',
  describe: "kiln.lock: verify its signed InRelease and index chain, get the locked .debs (sha256-verified) and serve them as the only repository",
  reads: ['source'],
  provides: ['lock'],
  skip: (ctx) => ctx.options.lock === 'ignore' || !existsSync(lockPath(ctx.template.dir)),
  async run(ctx, p) {
    const file = lockPath(ctx.template.dir);
    const outside = sourceOutsideLock(ctx.template.config);
    if (outside) {
      throw new KilnError(`kiln.lock pins a Debian archive package set, but this kiln.yaml builds from ${outside.what}, which kiln.lock does not cover yet`, { where: { file }, hint: `remove kiln.lock and ${outside.pin}` });
    }
    const { lock, sha256 } = readLock(file);
    const d = ctx.template.config.source.debian;
    if (lock.archive.suite !== d.suite) {
      throw new KilnError(`kiln.lock was written for ${lock.archive.suite}, but kiln.yaml builds ${d.suite}`, { where: { file }, hint: 'run `kiln lock --update`' });
    }
    if (lock.lock !== LOCK_FORMAT) {
      throw new KilnError(`kiln.lock is format ${lock.lock}: it has no signed InRelease to check the packages against`, { where: { file }, hint: 'run `kiln lock --update` (it writes format ' + LOCK_FORMAT + ' and kiln.lock.d/) and commit both' });
    }
    p.status('verifying the signed InRelease and Packages index chain of kiln.lock');
    const chain = { lockFile: file, debian: d, cacheDir: ctx.cacheDir, logger: ctx.logger };
    const trust = await ctx.drivers.verifyLockedSet(lock, chain);
    const toolsTrust = lock.tools ? await ctx.drivers.verifyLockedSet(lock.tools, { ...chain, tools: true }) : undefined;
    const got = await ctx.drivers.fetchLockedDebs(lock, { cacheDir: ctx.cacheDir, mirror: d.mirror, snapshot: d.snapshot, logger: ctx.logger, onStatus: (s) => p.status(s) });
    p.status('indexing the locked packages');
    const index = await ctx.drivers.lockedPackagesIndex(lock, ctx.cacheDir, ctx.logger);
    const repo = await ctx.drivers.serveLockedRepo(lock, ctx.cacheDir, index, join(ctx.workDir, 'locked-repo'));
    ctx.lock = { file, sha256, lock, repo, trust, ...(toolsTrust ? { toolsTrust } : {}) };
    const fetched = got.fromMirror + got.fromSnapshot.length;
    p.log(`${lock.packages.length} locked packages (kiln.lock ${sha256.slice(0, 12)}): ${got.cached + got.reused} cached, ${fetched} downloaded${got.fromSnapshot.length ? `, ${got.fromSnapshot.length} from the snapshot mirror` : ''}`);
  },
  async cleanup(ctx) {
    await ctx.lock?.repo.close();
  },
});

/** A source kiln.lock does not cover yet (a vendor image, a parent release): what it is, and how to pin it in kiln.yaml instead. */
export function sourceOutsideLock(c: KilnConfig): { what: string; pin: string } | undefined {
  if (c.source.image) return { what: 'a vendor image (source.image)', pin: 'pin the image in kiln.yaml (source.image.sha512): the same pin always means the same upstream bytes' };
  if (c.source.release) return { what: 'a Kiln release (source.release)', pin: 'name the parent by digest in kiln.yaml (source.release.ref: name@sha256:…): the same digest always means the same parent' };
  return undefined;
}

export function lockedBase(s: LockState): LockedBase {
  return { sourcesLine: s.repo.sourcesLine, packageSet: packageSetDigest(s.lock), sourceDateEpoch: s.trust.archiveDate };
}

/**
 * Turns apt's "not available" failures in a locked build into an error naming the package and the
 * lock. Other errors are returned as they are.
 */
export function explainLockedFailure(e: unknown, s: LockState): unknown {
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
  const locked = s.lock.packages.filter((p) => p.name === name.split('=')[0]);
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
    });
    if (!controller.tools) throw new Error(`controllerFor gave no tools tree for provision.ansible: ${c.provision.ansible}`);
    const { unlocked } = compareInstalled(controller.tools.packages, pins);
    if (unlocked.length) throw new KilnError(`the tools tree has ${unlocked.length} package(s) kiln.lock does not pin: ${unlocked.slice(0, 5).join(', ')}`, { where: { file: lock.file }, hint: 'run `kiln lock --update`' });
    return controller;
  } finally {
    await repo.close();
  }
}
