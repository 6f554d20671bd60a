/**
 * The version is stamped into the image: /etc/release (key=value, for scripts and `kiln apply`)
 * and IMAGE_ID / IMAGE_VERSION in /etc/os-release (os-release(5)), which replaces the symlink to
 * /usr/lib/os-release with a local file.
 */
import { lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

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

export function stampTree(root: string, s: Stamp): void {
  writeFileSync(join(root, 'etc/release'), releaseFile(s), { mode: 0o644 });
  const etc = join(root, 'etc/os-release');
  // Never follow a link out of the tree: an absolute link would read the build host's file.
  const st = lstatSync(etc, { throwIfNoEntry: false });
  const original = readFileSync(st?.isFile() ? etc : join(root, 'usr/lib/os-release'), 'utf8');
  if (st && !st.isFile()) rmSync(etc);
  writeFileSync(etc, stampOsRelease(original, s), { mode: 0o644 });
}
