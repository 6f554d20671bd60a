/**
 * The trusted upstream: Debian from the signed archive. Kiln fetches the suite's InRelease, verifies
 * it with gpgv against the configured keyring (mmdebstrap/apt verify every index and package against
 * it in turn), and records what was trusted: the InRelease hash, the signing key fingerprint, the
 * keyring hash and the installed package list. The base tree is cached under a key of its inputs.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, output, quoteArg } from '../exec.js';
import type { Logger } from '../log.js';
import type { KilnConfig } from '../template/schema.js';
import type { RemoteCache } from '../pipeline/remote-cache.js';
import { commitEntry, entryTemp, intactEntry, removeDeadTemps, type EntryRecord } from '../cache-entry.js';
import { resolvedPath } from '../image/tree.js';
import { checkFreshness, unverifiedInRelease, verifyInRelease, type ReleaseText } from './inrelease.js';

/** Packages every Kiln image needs: boot, first-boot identity, SSH, and Python for Ansible. */
export const BASE_PACKAGES = [
  'systemd-sysv', 'udev', 'dbus', 'openssh-server', 'systemd-resolved', 'cloud-init', 'python3', 'python3-apt',
  'sudo', 'ca-certificates', 'initramfs-tools', 'iproute2', 'netbase', 'cloud-guest-utils',
];

export interface InstalledPackage { name: string; version: string; arch: string }

export interface DebianSourceRecord {
  type: 'debian';
  mirror: string;
  suite: string;
  components: string[];
  verified: boolean;
  /** sha256 of the InRelease file the build trusted. */
  inReleaseSha256?: string;
  /** The archive's Date: field, as an epoch (the base tree's SOURCE_DATE_EPOCH). */
  archiveDate?: number;
  signingKeyFingerprint?: string;
  keyring: string;
  keyringSha256?: string;
  packages: InstalledPackage[];
  /** Cache key of the base tree. */
  baseKey: string;
  /** sha256 of the base tree tarball the image was made from (checked against the cache record on use). */
  baseSha256?: string;
  /** sha256 of kiln.lock, when the build installed exactly its package set. */
  lockSha256?: string;
}

/** A locked base: mmdebstrap installs from the local repository of the locked .debs. */
export interface LockedBase {
  /** `deb [trusted=yes] http://127.0.0.1:PORT/ ./` */
  sourcesLine: string;
  /** Digest of the locked package set (the cache key input instead of the live InRelease). */
  packageSet: string;
  /** The lock's archive date: SOURCE_DATE_EPOCH of the base tree. */
  sourceDateEpoch: number;
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface ArchiveTrust { verified: boolean; inReleaseSha256: string; archiveDate: number; signingKeyFingerprint?: string; keyringSha256?: string }

/** The trust a build records from what an InRelease's signed text says. */
export function trustOf(r: ReleaseText, keyring: string): ArchiveTrust {
  return {
    verified: r.verified, inReleaseSha256: r.inReleaseSha256, archiveDate: r.date,
    ...(r.verified ? { signingKeyFingerprint: r.signedBy, keyringSha256: sha256(readFileSync(keyring)) } : {}),
  };
}

/** The one warning of a build whose archive signature is not checked (source.debian.verify: false). */
export function warnUnverified(logger: Logger): void {
  logger.warn('source.debian.verify is false: the archive signature is NOT checked. Whoever answers for the mirror chooses '
    + "the image's packages. The build and release record say verified: false; the image's own sources.list is the plain "
    + 'line (no [trusted=yes]), so apt in the image checks signatures again.');
}

/**
 * Fetches dists/<suite>/InRelease, verifies it with gpgv and checks it is fresh (source.debian.max_age,
 * Valid-Until). An unverifiable archive is an error unless verify is off.
 */
export async function verifyArchive(d: KilnConfig['source']['debian'], workDir: string, logger: Logger, fileName = 'InRelease', now?: number): Promise<ArchiveTrust> {
  const url = `${d.mirror.replace(/\/$/, '')}/dists/${d.suite}/InRelease`;
  const file = join(workDir, fileName);
  const got = await exec('curl', ['-fsSL', '--retry', '2', '--connect-timeout', '20', '-o', file, url], { allowFailure: true, logger });
  if (got.code !== 0) {
    throw new KilnError(`cannot fetch ${url}: ${got.stderr.trim().replace(/^curl: \(\d+\) /, '')}`, {
      hint: 'check source.debian.mirror in kiln.yaml and the network (the mirror must be reachable from the build host)',
    });
  }
  const release = await readArchiveInRelease(d, file, logger, url);
  checkFreshness(release, { maxAge: d.max_age, now, what: `the archive's InRelease at ${url}` });
  return trustOf(release, d.keyring);
}

/** An InRelease of source.debian's archive: gpgv-verified against its keyring, or read as is when verify is false. */
export async function readArchiveInRelease(d: Pick<KilnConfig['source']['debian'], 'verify' | 'keyring'>, file: string, logger: Logger, what: string): Promise<ReleaseText> {
  if (!d.verify) {
    warnUnverified(logger);
    return unverifiedInRelease(file, what);
  }
  if (!existsSync(d.keyring)) {
    throw new KilnError(`archive keyring not found: ${d.keyring}`, { hint: 'install debian-archive-keyring (`kiln doctor`) or set source.debian.keyring' });
  }
  return verifyInRelease(file, d.keyring, logger, `the archive's InRelease at ${what}`);
}

export function basePackages(d: KilnConfig['source']['debian']): string[] {
  return [...new Set([d.kernel, ...BASE_PACKAGES, ...d.packages])].sort();
}

export function baseKey(d: KilnConfig['source']['debian'], trust: ArchiveTrust): string {
  // An unverified base's key changed when its image stopped saying [trusted=yes] (imageSources).
  return sha256(JSON.stringify({ v: 1, mirror: d.mirror, suite: d.suite, components: d.components, packages: basePackages(d), inRelease: trust.inReleaseSha256, verify: d.verify, keyring: trust.keyringSha256 ?? null, ...(d.verify ? {} : { imageSources: 'plain' }) }));
}

/** The locked base's key: the locked set, not the archive's state today. */
export function lockedBaseKey(d: KilnConfig['source']['debian'], locked: LockedBase): string {
  return sha256(JSON.stringify({ v: 2, mirror: d.mirror, suite: d.suite, components: d.components, packages: basePackages(d), packageSet: locked.packageSet, sde: locked.sourceDateEpoch, verify: d.verify, ...(d.verify ? {} : { imageSources: 'plain' }) }));
}

/**
 * The sources.list every image gets: the plain line, whatever the build itself used (a lock's local
 * repository, or `[trusted=yes]` when source.debian.verify is false), so apt in the image always
 * checks the archive's signatures.
 */
export function mirrorSourcesLine(d: KilnConfig['source']['debian']): string {
  return `deb ${d.mirror} ${d.suite} ${d.components.join(' ')}`;
}

/** The line apt uses while the image is built: `[trusted=yes]` only when verify is false, and never in the image. */
export function buildSourcesLine(d: KilnConfig['source']['debian']): string {
  return d.verify ? mirrorSourcesLine(d) : `deb [trusted=yes] ${d.mirror} ${d.suite} ${d.components.join(' ')}`;
}

/**
 * mmdebstrap's argv for the base tree (pure, so what reaches a hook is testable). mmdebstrap runs a
 * hook under `sh -c` unless it is one of its special commands, and splits those like a shell: the
 * only hook here is `upload`, whose one host path is quoted with quoteArg (tested against that split).
 * When the build installs from another line than the image's (a lock's local repository, or the
 * `[trusted=yes]` line of verify: false), the image's own line is uploaded over it at the end.
 */
export function mmdebstrapArgs(d: KilnConfig['source']['debian'], tar: string, locked?: LockedBase, imageSourcesFile?: string): string[] {
  const insecure = ['--aptopt=Acquire::AllowInsecureRepositories "true"', '--aptopt=APT::Get::AllowUnauthenticated "true"'];
  const line = locked ? locked.sourcesLine : buildSourcesLine(d);
  if (line !== mirrorSourcesLine(d) && !imageSourcesFile) throw new Error('mmdebstrapArgs: the image needs its own sources.list file');
  return [
    '--mode=root', '--variant=apt', '--format=tar',
    `--include=${basePackages(d).join(',')}`,
    `--components=${d.components.join(',')}`,
    ...(d.verify ? (locked ? [] : [`--keyring=${d.keyring}`]) : insecure),
    '--aptopt=Acquire::Retries "3"',
    ...(line !== mirrorSourcesLine(d) ? [`--customize-hook=upload ${quoteArg(imageSourcesFile!)} /etc/apt/sources.list`] : []),
    d.suite, tar, line,
  ];
}

/** Builds (or reuses from the cache) the base tree tarball; returns its path. */
export async function baseTarball(d: KilnConfig['source']['debian'], trust: ArchiveTrust, cacheDir: string, workDir: string, logger: Logger, onLine?: (l: string) => void, locked?: LockedBase, remote?: RemoteCache): Promise<{ tar: string; key: string; cached: boolean; sha256: string; remote?: boolean }> {
  const key = locked ? lockedBaseKey(d, locked) : baseKey(d, trust);
  const dir = join(cacheDir, 'base');
  mkdirSync(dir, { recursive: true });
  const tar = join(dir, `${key}.tar`);
  const record = join(dir, `${key}.json`);
  const share = (sha256: string) => remote?.enqueue('base', key, () => ({ meta: JSON.parse(readFileSync(record, 'utf8')) as Record<string, unknown>, files: [{ name: 'base.tar', path: tar, sha256, size: statSync(tar).size }] }));
  if (await intactEntry(tar, record, logger)) {
    const sha256 = (JSON.parse(readFileSync(record, 'utf8')) as EntryRecord).sha256;
    share(sha256);
    return { tar, key, cached: true, sha256 };
  }
  removeDeadTemps(dir);
  if (remote) {
    // A runner with an empty disk takes the base tree another runner built from the same archive state and packages.
    const pulled = entryTemp(`${tar}.pull`);
    try {
      const got = await remote.pull('base', key, pulled);
      const f = got?.files.find((x) => x.name === 'base.tar');
      if (got && f) {
        const { sha256: _s, size: _z, ino: _i, mtimeNs: _m, ...meta } = got.meta;
        const entry = await commitEntry(f.path, tar, record, meta);
        if (entry.sha256 === f.sha256) return { tar, key, cached: true, sha256: entry.sha256, remote: true };
      }
    } catch (e) {
      logger.warn(`the cache at ${remote.location} has base tree ${key.slice(0, 12)}, but it cannot be used (${(e as Error).message}); building it`);
    } finally {
      rmSync(pulled, { recursive: true, force: true });
    }
  }
  // Built in the cache's directory: a rename from workDir fails when KILN_CACHE_DIR is on another filesystem.
  const tmp = entryTemp(tar);
  // Installed from the lock's local repository (or a [trusted=yes] line), the image still gets the
  // plain line: it goes into a file that mmdebstrap uploads, so no value from kiln.yaml is ever part
  // of a hook's shell text.
  const imageSources = resolve(workDir, 'image-sources.list');
  writeFileSync(imageSources, `${mirrorSourcesLine(d)}\n`);
  const args = mmdebstrapArgs(d, tmp, locked, imageSources);
  await exec('mmdebstrap', args, {
    logger, onStderrLine: onLine,
    env: { SOURCE_DATE_EPOCH: String(locked ? locked.sourceDateEpoch : trust.archiveDate), LC_ALL: 'C.UTF-8' },
    hint: locked
      ? 'mmdebstrap could not install the base from kiln.lock: a package in source.debian (or one it needs) is probably not locked; run `kiln lock --update`'
      : 'mmdebstrap could not build the base tree: check the mirror and the package names in source.debian',
  }).catch((e: unknown) => { rmSync(tmp, { force: true }); throw e; });
  const entry = await commitEntry(tmp, tar, record, { mirror: d.mirror, suite: d.suite, packages: basePackages(d), locked: Boolean(locked), created: new Date().toISOString() });
  share(entry.sha256);
  return { tar, key, cached: false, sha256: entry.sha256 };
}

/** The tree as a tarball that extractTree gives back exactly (owners, modes, xattrs, ACLs, ns times, hard links). */
export async function packTree(root: string, tar: string, logger: Logger): Promise<void> {
  await exec('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--format=posix', '-cf', tar, '-C', root, '.'], { logger });
}

export async function extractTree(tar: string, root: string, logger: Logger): Promise<void> {
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  // --warning=no-timestamp: the build's own mark on what it wrote (src/disk/tree.ts) is in the future by design.
  await exec('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--warning=no-timestamp', '-xpf', tar, '-C', root], { logger });
}

/** The packages of a base tree tarball, from its dpkg database alone (the tree is not unpacked). */
export async function basePackagesOfTar(tar: string, scratch: string): Promise<InstalledPackage[]> {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  try {
    await exec('tar', ['-xf', tar, '-C', scratch, './var/lib/dpkg/status'], { hint: 'the base tree tarball has no dpkg database' });
    return await installedPackages(scratch);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export async function installedPackages(root: string): Promise<InstalledPackage[]> {
  // The tree's own dpkg database, even if /var is a link in it (never the build host's).
  const out = await output('dpkg-query', [`--admindir=${resolvedPath(root, '/var/lib/dpkg')}`, '-W', '-f', '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n']);
  return out.split('\n').filter((l) => l.startsWith('ii')).map((l) => {
    const [, name, version, arch] = l.split('\t');
    return { name, version, arch };
  }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
