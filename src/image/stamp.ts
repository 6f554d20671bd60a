/**
 * The version is stamped into the image: /etc/release (key=value, for scripts and `kiln apply`)
 * and IMAGE_ID / IMAGE_VERSION in /etc/os-release (os-release(5)), which replaces the symlink to
 * /usr/lib/os-release with a local file.
 */
import { readTreeFile, writeTreeFile } from './tree.js';

export interface Stamp { name: string; version: string; commit: string; snapshot: boolean; sourceDateEpoch: number }

export function releaseFile(s: Stamp): string {
  return [
    `IMAGE_ID=${s.name}`,
    `IMAGE_VERSION=${s.version}`,
    `IMAGE_COMMIT=${s.commit}`,
    `IMAGE_BUILD=${s.snapshot ? 'snapshot' : 'release'}`,
    `IMAGE_SOURCE_DATE_EPOCH=${s.sourceDateEpoch}`,
    '',
  ].join('\n');
}

/** os-release text with IMAGE_ID/IMAGE_VERSION set (replacing earlier values). */
export function stampOsRelease(original: string, s: Pick<Stamp, 'name' | 'version'>): string {
  const kept = original.split('\n').filter((l) => l.trim() && !/^(IMAGE_ID|IMAGE_VERSION)=/.test(l));
  return [...kept, `IMAGE_ID=${JSON.stringify(s.name)}`, `IMAGE_VERSION=${JSON.stringify(s.version)}`, ''].join('\n');
}

export function parseKeyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let v = m[2];
    if (/^".*"$/.test(v)) v = JSON.parse(v) as string;
    else if (/^'.*'$/.test(v)) v = v.slice(1, -1);
    out[m[1]] = v;
  }
  return out;
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
