/**
 * An archive's Packages index, chained to its signature: the InRelease text gpgv verified gives the
 * index's sha256 (uncompressed, and of Packages.xz); an index is used only if it matches. Each one is
 * cached content-addressed as <cache>/archive-index/<sha256>.Packages and hashed again on every use,
 * so a file cut short or edited in the cache is a miss, never an index.
 */
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { entryTemp, removeDeadTemps } from '../cache-entry.js';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { sha256OfFile } from '../fsio.js';
import type { Logger } from '../log.js';
import type { IndexHash, ReleaseText } from '../source/inrelease.js';
import { packagesIndexPath, type LockedIndex } from './file.js';

export function indexCachePath(cacheDir: string, sha256: string): string {
  return join(cacheDir, 'archive-index', `${sha256}.Packages`);
}

/** What is wrong with file against the size and sha256 the signed InRelease gives (undefined: nothing). */
async function mismatch(file: string, want: IndexHash): Promise<string | undefined> {
  if (!existsSync(file)) return 'missing';
  const size = statSync(file).size;
  if (size !== want.size) return `${size} bytes, the signed InRelease says ${want.size}`;
  const sum = await sha256OfFile(file);
  return sum === want.sha256 ? undefined : `sha256 ${sum}, the signed InRelease says ${want.sha256}`;
}

/** True when file is there and matches; anything else there is removed (a miss), with a warning. */
async function intactIndex(file: string, want: IndexHash, logger: Logger, what: string): Promise<boolean> {
  if (!existsSync(file)) return false;
  const problem = await mismatch(file, want);
  if (!problem) return true;
  logger.warn(`${what} is not the signed one (${problem}): not used`);
  rmSync(file, { force: true });
  return false;
}

export interface IndexSource {
  cacheDir: string;
  suite: string;
  /** Archive roots to download from, in order (the mirror, then a snapshot mirror). */
  mirrors: string[];
  /** A copy that may already be there (apt's lists): used when it matches. */
  localCopy?: string;
  logger: Logger;
}

/**
 * The Packages index of component as the verified release gives it: from the cache, a local copy, or
 * downloaded (by-hash first, which serves an index the mirror has since replaced) and checked.
 */
export async function packagesIndex(release: ReleaseText, component: string, o: IndexSource): Promise<{ text: string; index: LockedIndex }> {
  const path = packagesIndexPath(component);
  const want = release.hashes.get(path);
  if (!want) throw new KilnError(`the signed InRelease of ${o.suite} lists no ${path}`, { hint: 'check source.debian.components' });
  const index = { path, ...want };
  const dir = join(o.cacheDir, 'archive-index');
  mkdirSync(dir, { recursive: true });
  const file = indexCachePath(o.cacheDir, want.sha256);
  if (await intactIndex(file, want, o.logger, `cached Packages index ${file}`)) return { text: await readFile(file, 'utf8'), index };
  removeDeadTemps(dir);
  const tmp = entryTemp(file);
  if (o.localCopy && existsSync(o.localCopy)) {
    copyFileSync(o.localCopy, tmp);
    if (await intactIndex(tmp, want, o.logger, `${o.localCopy}`)) {
      renameSync(tmp, file);
      return { text: await readFile(file, 'utf8'), index };
    }
  }
  const xz = release.hashes.get(`${path}.xz`);
  if (!xz) throw new KilnError(`the signed InRelease of ${o.suite} lists no ${path}.xz to download`);
  const tried: string[] = [];
  for (const mirror of o.mirrors) {
    const root = `${mirror.replace(/\/+$/, '')}/dists/${o.suite}/${component}/binary-amd64`;
    for (const url of [`${root}/by-hash/SHA256/${xz.sha256}`, `${root}/Packages.xz`]) {
      tried.push(url);
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp);
      try {
        const got = await exec('curl', ['-fsSL', '--retry', '2', '--connect-timeout', '20', '-o', join(tmp, 'Packages.xz'), url], { allowFailure: true, logger: o.logger });
        if (got.code !== 0 || !(await intactIndex(join(tmp, 'Packages.xz'), xz, o.logger, url))) continue;
        const un = await exec('xz', ['-d', join(tmp, 'Packages.xz')], { allowFailure: true, logger: o.logger });
        if (un.code !== 0 || !(await intactIndex(join(tmp, 'Packages'), want, o.logger, `${url}, decompressed`))) continue;
        renameSync(join(tmp, 'Packages'), file);
        return { text: await readFile(file, 'utf8'), index };
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    }
  }
  throw new KilnError(`no Packages index of ${o.suite}/${component} with the sha256 its signed InRelease gives (${want.sha256})`, {
    detail: `tried:\n${tried.join('\n')}`,
    hint: 'the mirror may be mid-update (run it again), or no longer have this index: set source.debian.snapshot to a snapshot mirror from that date',
  });
}
