/**
 * Debian changelog entries between two versions of a package, read from the newer image's
 * /usr/share/doc/<package>/changelog.Debian.gz (deb-changelog(5)), with the fixes they name.
 * The file comes from an image: it is read inside the image's tree (links resolved there, never on
 * the host), at most 4 MiB compressed and 16 MiB decompressed.
 */
import { gunzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { readTreeBytes } from '../image/tree.js';

export interface ChangelogEntry {
  version: string;
  distribution: string;
  urgency: string;
  /** The change lines, as written (leading two spaces removed). */
  changes: string[];
  /** The trailer's maintainer and date. */
  by: string;
  date: string;
  /** CVE ids the entry names. */
  cves: string[];
  /** True when the entry names a CVE or was uploaded to a security suite (…-security). */
  security: boolean;
}

const HEADER = /^(\S+) \(([^()\s]+)\) ([^;]+);(.*)$/;
const TRAILER = /^ -- (.*?) {2}(.+)$/;

/** The entries of a changelog, newest first, as the file lists them. */
export function parseChangelog(text: string): ChangelogEntry[] {
  const out: ChangelogEntry[] = [];
  let cur: ChangelogEntry | undefined;
  for (const line of text.split('\n')) {
    const h = HEADER.exec(line);
    if (h) {
      const urgency = /urgency=(\w+)/i.exec(h[4])?.[1] ?? '';
      cur = { version: h[2], distribution: h[3].trim(), urgency, changes: [], by: '', date: '', cves: [], security: false };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const t = TRAILER.exec(line);
    if (t) { cur.by = t[1]; cur.date = t[2]; continue; }
    if (line.startsWith('  ')) cur.changes.push(line.slice(2));
  }
  for (const e of out) {
    e.cves = [...new Set(e.changes.join('\n').match(/CVE-\d{4}-\d{4,}/g) ?? [])];
    e.security = e.cves.length > 0 || /-security\b/.test(e.distribution);
  }
  return out;
}

/** dpkg's version order (dpkg --compare-versions): a < b. */
export function versionLess(a: string, b: string): boolean {
  return spawnSync('dpkg', ['--compare-versions', a, 'lt', b]).status === 0;
}

/** The entries newer than `from`, up to and including `to` (an upgrade from → to), newest first. */
export function entriesBetween(entries: ChangelogEntry[], from: string, to: string): ChangelogEntry[] {
  return entries.filter((e) => versionLess(from, e.version) && !versionLess(to, e.version));
}

/** The changelog of a package in an image tree, or undefined when the image has none (or it is too big or not gzip). */
export function readImageChangelog(root: string, pkg: string): ChangelogEntry[] | undefined {
  if (!/^[a-z0-9][a-z0-9+.-]*$/.test(pkg)) return undefined;
  for (const name of ['changelog.Debian.gz', 'changelog.gz']) {
    const gz = readTreeBytes(root, `/usr/share/doc/${pkg}/${name}`, { follow: true, max: 4 * 1024 * 1024 });
    if (!gz) continue;
    try {
      return parseChangelog(gunzipSync(gz, { maxOutputLength: 16 * 1024 * 1024 }).toString('utf8'));
    } catch {
      return undefined;
    }
  }
  return undefined;
}
