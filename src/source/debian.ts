/**
 * The trusted upstream: Debian from the signed archive. Kiln fetches the suite's InRelease, verifies
 * it with gpgv against the configured keyring (mmdebstrap/apt verify every index and package against
 * it in turn), and records what was trusted: the InRelease hash, the signing key fingerprint, the
 * keyring hash and the installed package list. The base tree is cached under a key of its inputs.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, output, quoteArg } from '../exec.js';
import type { Logger } from '../log.js';
import type { KilnConfig } from '../template/schema.js';
import { commitEntry, entryTemp, intactEntry, removeDeadTemps } from '../cache-entry.js';
import { resolvedPath } from '../image/tree.js';

/** Packages every Kiln image needs: boot, first-boot identity, SSH, and Python for Ansible. */
export const BASE_PACKAGES = [
  'systemd-sysv', 'udev', 'dbus', 'openssh-server', 'systemd-resolved', 'cloud-init', 'python3', 'python3-apt',
  'sudo', 'ca-certificates', 'initramfs-tools', 'iproute2', 'netbase', 'cloud-guest-utils',
];

export interface InstalledPackage { name: string; version: string; arch: string }

export interface SourceRecord {
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

/** Fetches and verifies dists/<suite>/InRelease. An unverifiable archive is an error unless verify is off. */
export async function verifyArchive(d: KilnConfig['source']['debian'], workDir: string, logger: Logger, fileName = 'InRelease'): Promise<ArchiveTrust> {
  const url = `${d.mirror.replace(/\/$/, '')}/dists/${d.suite}/InRelease`;
  const file = join(workDir, fileName);
  const got = await exec('curl', ['-fsSL', '--retry', '2', '--connect-timeout', '20', '-o', file, url], { allowFailure: true, logger });
  if (got.code !== 0) {
    throw new KilnError(`cannot fetch ${url}: ${got.stderr.trim().replace(/^curl: \(\d+\) /, '')}`, {
      hint: 'check source.debian.mirror in kiln.yaml and the network (the mirror must be reachable from the build host)',
    });
  }
  const text = readFileSync(file);
  const dateLine = /^Date: (.*)$/m.exec(text.toString('utf8'))?.[1];
  const archiveDate = dateLine ? Math.floor(Date.parse(dateLine) / 1000) : 0;
  const trust: ArchiveTrust = { verified: false, inReleaseSha256: sha256(text), archiveDate };
  if (!d.verify) {
    logger.warn(`source.debian.verify is false: the archive signature is NOT checked (recorded in the build record)`);
    return trust;
  }
  if (!existsSync(d.keyring)) {
    throw new KilnError(`archive keyring not found: ${d.keyring}`, { hint: 'install debian-archive-keyring (`kiln doctor`) or set source.debian.keyring' });
  }
  const v = await exec('gpgv', ['--status-fd', '1', '--keyring', d.keyring, file], { allowFailure: true, logger });
  const valid = /^\[GNUPG:\] VALIDSIG ([0-9A-F]+)/m.exec(v.stdout);
  if (v.code !== 0 || !valid) {
    throw new KilnError(`the archive's InRelease at ${url} is not signed by a key in ${d.keyring}`, {
      detail: v.stderr,
      hint: 'refusing an unverifiable source; use the right keyring, or set source.debian.verify: false to opt out explicitly',
    });
  }
  trust.verified = true;
  trust.signingKeyFingerprint = valid[1];
  trust.keyringSha256 = sha256(readFileSync(d.keyring));
  return trust;
}

export function basePackages(d: KilnConfig['source']['debian']): string[] {
  return [...new Set([d.kernel, ...BASE_PACKAGES, ...d.packages])].sort();
}

export function baseKey(d: KilnConfig['source']['debian'], trust: ArchiveTrust): string {
  return sha256(JSON.stringify({ v: 1, mirror: d.mirror, suite: d.suite, components: d.components, packages: basePackages(d), inRelease: trust.inReleaseSha256, verify: d.verify, keyring: trust.keyringSha256 ?? null }));
}

/** The locked base's key: the locked set, not the archive's state today. */
export function lockedBaseKey(d: KilnConfig['source']['debian'], locked: LockedBase): string {
  return sha256(JSON.stringify({ v: 2, mirror: d.mirror, suite: d.suite, components: d.components, packages: basePackages(d), packageSet: locked.packageSet, sde: locked.sourceDateEpoch, verify: d.verify }));
}

/** The sources.list every image gets (also when a lock's local repository installed it). */
export function mirrorSourcesLine(d: KilnConfig['source']['debian']): string {
  return `deb${d.verify ? '' : ' [trusted=yes]'} ${d.mirror} ${d.suite} ${d.components.join(' ')}`;
}

/**
 * mmdebstrap's argv for the base tree (pure, so what reaches a hook is testable). mmdebstrap runs a
 * hook under `sh -c` unless it is one of its special commands, and splits those like a shell: the
 * only hook here is `upload`, whose one host path is quoted with quoteArg (tested against that split).
 */
export function mmdebstrapArgs(d: KilnConfig['source']['debian'], tar: string, locked?: LockedBase & { sourcesFile: string }): string[] {
  const insecure = ['--aptopt=Acquire::AllowInsecureRepositories "true"', '--aptopt=APT::Get::AllowUnauthenticated "true"'];
  return [
    '--mode=root', '--variant=apt', '--format=tar',
    `--include=${basePackages(d).join(',')}`,
    `--components=${d.components.join(',')}`,
    ...(d.verify ? (locked ? [] : [`--keyring=${d.keyring}`]) : insecure),
    '--aptopt=Acquire::Retries "3"',
    ...(locked ? [`--customize-hook=upload ${quoteArg(locked.sourcesFile)} /etc/apt/sources.list`] : []),
    d.suite, tar, locked ? locked.sourcesLine : mirrorSourcesLine(d),
  ];
}

/** Builds (or reuses from the cache) the base tree tarball; returns its path. */
export async function baseTarball(d: KilnConfig['source']['debian'], trust: ArchiveTrust, cacheDir: string, workDir: string, logger: Logger, onLine?: (l: string) => void, locked?: LockedBase): Promise<{ tar: string; key: string; cached: boolean }> {
  const key = locked ? lockedBaseKey(d, locked) : baseKey(d, trust);
  const dir = join(cacheDir, 'base');
  mkdirSync(dir, { recursive: true });
  const tar = join(dir, `${key}.tar`);
  const record = join(dir, `${key}.json`);
  if (await intactEntry(tar, record, logger)) return { tar, key, cached: true };
  removeDeadTemps(dir);
  // Built in the cache's directory: a rename from workDir fails when KILN_CACHE_DIR is on another filesystem.
  const tmp = entryTemp(tar);
  // Installed from the lock's local repository, the image still names the real mirror: the line goes
  // into a file that mmdebstrap uploads, so no value from kiln.yaml is ever part of a hook's shell text.
  const lockedInstall = locked && { ...locked, sourcesFile: resolve(workDir, 'image-sources.list') };
  if (lockedInstall) writeFileSync(lockedInstall.sourcesFile, `${mirrorSourcesLine(d)}\n`);
  const args = mmdebstrapArgs(d, tmp, lockedInstall);
  await exec('mmdebstrap', args, {
    logger, onStderrLine: onLine,
    env: { SOURCE_DATE_EPOCH: String(locked ? locked.sourceDateEpoch : trust.archiveDate), LC_ALL: 'C.UTF-8' },
    hint: locked
      ? 'mmdebstrap could not install the base from kiln.lock: a package in source.debian (or one it needs) is probably not locked; run `kiln lock --update`'
      : 'mmdebstrap could not build the base tree: check the mirror and the package names in source.debian',
  }).catch((e: unknown) => { rmSync(tmp, { force: true }); throw e; });
  await commitEntry(tmp, tar, record, { mirror: d.mirror, suite: d.suite, packages: basePackages(d), locked: Boolean(locked), created: new Date().toISOString() });
  return { tar, key, cached: false };
}

export async function extractTree(tar: string, root: string, logger: Logger): Promise<void> {
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  await exec('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf', tar, '-C', root], { logger });
}

export async function installedPackages(root: string): Promise<InstalledPackage[]> {
  // The tree's own dpkg database, even if /var is a link in it (never the build host's).
  const out = await output('dpkg-query', [`--admindir=${resolvedPath(root, '/var/lib/dpkg')}`, '-W', '-f', '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n']);
  return out.split('\n').filter((l) => l.startsWith('ii')).map((l) => {
    const [, name, version, arch] = l.split('\t');
    return { name, version, arch };
  }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
