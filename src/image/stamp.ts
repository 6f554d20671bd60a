/**
 * The version is stamped into the image: /etc/release (key=value, for scripts and `kiln apply`)
 * and IMAGE_ID / IMAGE_VERSION in /etc/os-release (os-release(5)), which replaces the symlink to
 * /usr/lib/os-release with a local file.
 */
import { readTreeFile, writeTreeFile } from './tree.js';

export interface Stamp {
  name: string; version: string; commit: string; snapshot: boolean; sourceDateEpoch: number;
  /** Where the image comes from: its parent release and the chain to the upstream at the root. */
  lineage?: Lineage;
}

export interface Lineage {
  /** The parent release, name@version, and its digest. */
  parent?: { ref: string; digest: string };
  /** name@version of each ancestor release, the parent first. */
  ancestry: string[];
  /** The upstream at the root of the chain: "<kind> <uri> <algorithm>:<digest>". */
  root?: string;
}

export function releaseFile(s: Stamp): string {
  return [
    `IMAGE_ID=${s.name}`,
    `IMAGE_VERSION=${s.version}`,
    `IMAGE_COMMIT=${s.commit}`,
    `IMAGE_BUILD=${s.snapshot ? 'snapshot' : 'release'}`,
    `IMAGE_SOURCE_DATE_EPOCH=${s.sourceDateEpoch}`,
    ...(s.lineage?.parent ? [`IMAGE_PARENT=${s.lineage.parent.ref}`, `IMAGE_PARENT_DIGEST=${s.lineage.parent.digest}`] : []),
    ...(s.lineage?.ancestry.length ? [`IMAGE_ANCESTRY='${s.lineage.ancestry.join(' ')}'`] : []),
    ...(s.lineage?.root ? [`IMAGE_ROOT_UPSTREAM='${s.lineage.root.replace(/'/g, '')}'`] : []),
    '',
  ].join('\n');
}

/** os-release text with IMAGE_ID/IMAGE_VERSION set (replacing earlier values). */
export function stampOsRelease(original: string, s: Pick<Stamp, 'name' | 'version'>): string {
  const kept = original.split('\n').filter((l) => l.trim() && !/^(IMAGE_ID|IMAGE_VERSION)=/.test(l));
  return [...kept, `IMAGE_ID=${JSON.stringify(s.name)}`, `IMAGE_VERSION=${JSON.stringify(s.version)}`, ''].join('\n');
}

/**
 * KEY=value lines with os-release(5) quoting: unquoted, 'single' (literal) or "double" (backslash
 * escapes \\ \" \$ \`, as in the shell). The text may come from another machine (kiln apply reads
 * each host's /etc/release), so a line it cannot read is a problem to report, never an exception.
 */
export function parseKeyValues(text: string): { values: Record<string, string>; problems: string[] } {
  const values: Record<string, string> = {};
  const problems: string[] = [];
  text.split('\n').forEach((line, i) => {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) return;
    const v = unquote(m[2]);
    if (v === undefined) problems.push(`line ${i + 1}: ${JSON.stringify(line.trim())} is not KEY=value, KEY='value' or KEY="value"`);
    else values[m[1]] = v;
  });
  return { values, problems };
}

function unquote(v: string): string | undefined {
  if (v.startsWith("'")) return /^'[^']*'$/.test(v) ? v.slice(1, -1) : undefined;
  if (v.startsWith('"')) {
    const m = /^"((?:[^"\\]|\\.)*)"$/.exec(v);
    return m ? m[1].replace(/\\([\\"$`])/g, '$1') : undefined;
  }
  return /["'\\`$\s]/.test(v) ? undefined : v;
}

/**
 * Writes /etc/release and a stamped /etc/os-release. Both replace whatever entry was there (a link
 * to /etc/shadow stays the image's shadow, untouched), and /etc/os-release is read through its
 * link inside the tree (Debian's -> ../usr/lib/os-release), never from the build host.
 */
export function stampTree(root: string, s: Stamp): void {
  writeTreeFile(root, '/etc/release', releaseFile(s));
  const original = readTreeFile(root, '/etc/os-release', { follow: true }) ?? readTreeFile(root, '/usr/lib/os-release', { follow: true }) ?? '';
  writeTreeFile(root, '/etc/os-release', stampOsRelease(original, s));
}
