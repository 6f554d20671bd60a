/**
 * The locked .debs, content-addressed in <cache>/debs/<sha256>.deb. Each one is downloaded from the
 * mirror (then from source.debian.snapshot when the mirror no longer has it) and kept only when its
 * sha256 is the one in kiln.lock, which came from the signed index. A cached one is hashed again on
 * every use: a file cut short by a crash or a full disk is discarded and downloaded again.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256OfFile } from '../fsio.js';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';
import { snapshotUrlFor, type LockedPackage, type LockedSet } from './file.js';

export function debPath(cacheDir: string, p: { sha256: string }): string {
  return join(cacheDir, 'debs', `${p.sha256}.deb`);
}

/** True when the cached .deb is there and is the locked one; a damaged one is removed (with a warning). */
export async function cachedDebIntact(cacheDir: string, p: LockedPackage, logger: Logger): Promise<boolean> {
  const file = debPath(cacheDir, p);
  if (!existsSync(file)) return false;
  const size = statSync(file).size;
  const problem = p.size > 0 && size !== p.size
    ? `${size} bytes, the lock says ${p.size}`
    : await sha256OfFile(file).then((sum) => (sum === p.sha256 ? undefined : `sha256 ${sum}`));
  if (!problem) return true;
  logger.warn(`cached ${p.name} ${p.version} (${file}) is damaged (${problem}): discarded, downloading it again`);
  rmSync(file, { force: true });
  return false;
}

/** apt's cache name for a .deb (":" of an epoch escaped as %3a). */
function aptArchiveName(p: LockedPackage): string {
  return `${p.name}_${p.version.replace(/:/g, '%3a')}_${p.architecture}.deb`;
}

export interface FetchReport { cached: number; reused: number; fromMirror: number; fromSnapshot: string[] }

/** Ensures every locked .deb is in the cache, verified; throws naming the packages it could not get. */
export async function fetchLockedDebs(lock: LockedSet, o: { cacheDir: string; mirror: string; snapshot?: string; logger: Logger; onStatus?: (s: string) => void }): Promise<FetchReport> {
  const dir = join(o.cacheDir, 'debs');
  mkdirSync(dir, { recursive: true });
  const report: FetchReport = { cached: 0, reused: 0, fromMirror: 0, fromSnapshot: [] };
  let need: LockedPackage[] = [];
  for (const p of lock.packages) {
    if (await cachedDebIntact(o.cacheDir, p, o.logger)) { report.cached++; continue; }
    need.push(p);
  }
  // apt's own download cache often has them already (a build before the lock was written).
  const aptCache = join(o.cacheDir, 'apt-archives');
  const still: LockedPackage[] = [];
  for (const p of need) {
    const f = join(aptCache, aptArchiveName(p));
    if (existsSync(f) && (await sha256OfFile(f)) === p.sha256) {
      copyFileSync(f, `${debPath(o.cacheDir, p)}.${process.pid}.tmp`);
      renameSync(`${debPath(o.cacheDir, p)}.${process.pid}.tmp`, debPath(o.cacheDir, p));
      report.reused++;
    } else {
      still.push(p);
    }
  }
  need = still;
  if (need.length) {
    o.onStatus?.(`downloading ${need.length} locked package(s) from ${o.mirror}`);
    need = await download(need, o.mirror, dir, o.logger);
    report.fromMirror = still.length - need.length;
  }
  if (need.length && o.snapshot) {
    o.onStatus?.(`downloading ${need.length} locked package(s) from the snapshot mirror ${o.snapshot}`);
    const before = need;
    need = await download(need, o.snapshot, dir, o.logger);
    report.fromSnapshot = before.filter((p) => !need.includes(p)).map((p) => `${p.name} ${p.version}`);
  }
  if (need.length) {
    const list = need.map((p) => `${p.name} ${p.version} (${p.architecture}): ${p.filename}`);
    const first = need[0];
    throw new KilnError(`the mirror no longer has ${need.length === 1 ? 'the locked version' : `${need.length} locked versions`}: ${first.name} ${first.version}${need.length > 1 ? `, and ${need.length - 1} more` : ''}`, {
      where: { file: 'kiln.lock' },
      detail: `tried ${o.mirror}${o.snapshot ? ` and ${o.snapshot}` : ''}:\n${list.join('\n')}`,
      hint: o.snapshot
        ? 'the snapshot mirror does not have them either: point source.debian.snapshot at a snapshot from when kiln.lock was written, or run `kiln lock --update`'
        : `set source.debian.snapshot in kiln.yaml to a snapshot mirror from when kiln.lock was written, e.g. ${snapshotUrlFor(lock)}, or move to current versions with \`kiln lock --update\``,
    });
  }
  return report;
}

/** Downloads what it can in one parallel curl run; returns the packages still missing or not matching. */
async function download(ps: LockedPackage[], base: string, dir: string, logger: Logger): Promise<LockedPackage[]> {
  const tmp = join(dir, `.partial-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const root = base.replace(/\/+$/, '');
    const config = ps.map((p) => `url = ${JSON.stringify(`${root}/${p.filename}`)}\noutput = ${JSON.stringify(join(tmp, `${p.sha256}.deb`))}\n`).join('');
    const cfg = join(tmp, 'curl.cfg');
    writeFileSync(cfg, config);
    // A missing file is not an error here: each result is checked against its sha256 below.
    await exec('curl', ['-sS', '--fail', '--retry', '2', '--connect-timeout', '20', '--parallel', '--parallel-max', '6', '-K', cfg], { allowFailure: true, logger });
    const missing: LockedPackage[] = [];
    const got = new Set(readdirSync(tmp));
    for (const p of ps) {
      const f = join(tmp, `${p.sha256}.deb`);
      if (!got.has(`${p.sha256}.deb`)) { missing.push(p); continue; }
      const sum = await sha256OfFile(f);
      if (sum !== p.sha256) {
        logger.warn(`${p.name} ${p.version} from ${root}: sha256 ${sum} is not the locked ${p.sha256}; ignored`);
        missing.push(p);
        continue;
      }
      renameSync(f, join(dir, `${p.sha256}.deb`));
    }
    return missing;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
