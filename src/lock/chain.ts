/**
 * A locked set's chain of trust, checked again by every locked build from the lock's own data: the
 * InRelease kept in kiln.lock.d is verified with gpgv against source.debian.keyring; each
 * component's Packages index must have the sha256 that verified text gives (fetched from the lock's
 * mirror or the snapshot mirror when not cached); each locked .deb's sha256, size and pool path must
 * be the ones that index gives for that package and version. What the build records as trusted
 * (verified, signer, InRelease, date) comes from this check, never from the lock's text: a lock
 * with one edited sha256 fails here, naming the package and its line.
 */
import { existsSync, readFileSync } from 'node:fs';
import { KilnError } from '../errors.js';
import type { Logger } from '../log.js';
import { readArchiveInRelease, trustOf, type ArchiveTrust } from '../source/debian.js';
import type { KilnConfig } from '../template/schema.js';
import { packagesIndex } from './archive-index.js';
import { inReleasePath, LOCK_DIR, packageLine, packagesIndexPath, type LockedSet } from './file.js';
import { parsePackagesIndex, type IndexEntry } from './packages-index.js';

export interface ChainOptions {
  lockFile: string;
  /** Which set of kiln.lock: the image's or the tools tree's (for line numbers in errors). */
  tools?: boolean;
  debian: Pick<KilnConfig['source']['debian'], 'verify' | 'keyring' | 'snapshot'>;
  cacheDir: string;
  logger: Logger;
}

const HINT = `kiln.lock and ${LOCK_DIR}/ are written by \`kiln lock\`: restore them from git, or run \`kiln lock --update\` and review the diff`;

/** Verifies set's chain and returns the archive trust the build records. */
export async function verifyLockedSet(set: LockedSet, o: ChainOptions): Promise<ArchiveTrust> {
  const where = { file: o.lockFile };
  const section = o.tools ? 'tools.archive' : 'archive';
  const a = set.archive;
  const file = inReleasePath(o.lockFile, a);
  if (!existsSync(file)) {
    throw new KilnError(`${file} is missing: kiln.lock's ${section} was resolved from that signed InRelease`, { where, hint: `commit ${LOCK_DIR}/ with kiln.lock; ${HINT}` });
  }
  const release = await readArchiveInRelease(o.debian, file, o.logger, file);
  if (release.inReleaseSha256 !== a.inRelease) {
    throw new KilnError(`${file} is not the InRelease kiln.lock names: its sha256 is ${release.inReleaseSha256}`, { where, hint: HINT });
  }
  if (release.verified && a.signedBy && a.signedBy !== release.signedBy) {
    throw new KilnError(`kiln.lock's ${section}.signedBy is ${a.signedBy}, but ${file} is signed by ${release.signedBy}`, { where, hint: HINT });
  }
  if (release.date !== a.date) {
    throw new KilnError(`kiln.lock's ${section}.date is not the signed Date of ${file}`, { where, hint: HINT });
  }
  const index = new Map<string, IndexEntry>();
  for (const c of a.components) {
    const path = packagesIndexPath(c);
    const locked = a.indexes.find((x) => x.path === path);
    const signed = release.hashes.get(path);
    if (!signed) throw new KilnError(`${file} lists no ${path}`, { where, hint: HINT });
    if (!locked || locked.sha256 !== signed.sha256 || locked.size !== signed.size) {
      throw new KilnError(`kiln.lock's ${section}.indexes entry for ${path} is not the one the signed InRelease gives (sha256 ${signed.sha256}, ${signed.size} bytes)`, { where, hint: HINT });
    }
    const mirrors = [a.mirror, ...(o.debian.snapshot ? [o.debian.snapshot] : [])];
    const { text } = await packagesIndex(release, c, { cacheDir: o.cacheDir, suite: a.suite, mirrors, logger: o.logger });
    parsePackagesIndex(text, index);
  }
  const bad: { p: LockedSet['packages'][number]; what: string }[] = [];
  for (const p of set.packages) {
    const e = index.get(`${p.name}:${p.architecture}=${p.version}`);
    const what = !e
      ? `${p.name} ${p.version} (${p.architecture}) is not in the signed Packages index of ${a.suite}`
      : e.sha256 !== p.sha256
        ? `${p.name} ${p.version} (${p.architecture}): sha256 ${p.sha256} is not the ${e.sha256} the signed Packages index of ${a.suite} gives`
        : e.size !== p.size || e.filename !== p.filename
          ? `${p.name} ${p.version} (${p.architecture}): size or filename is not what the signed Packages index of ${a.suite} gives (${e.size} bytes, ${e.filename})`
          : undefined;
    if (what) bad.push({ p, what });
  }
  if (bad.length) {
    const text = readFileSync(o.lockFile, 'utf8');
    const line = packageLine(text, bad[0].p, o.tools);
    throw new KilnError(`${bad[0].what}${bad.length > 1 ? ` (and ${bad.length - 1} more)` : ''}`, {
      where: { file: o.lockFile, ...(line ? { line } : {}) }, detail: bad.map((b) => b.what).join('\n'), hint: HINT,
    });
  }
  return trustOf(release, o.debian.keyring);
}
