/**
 * Debian Packages indexes: parsing the signed archive's index (for `kiln lock`) and writing the
 * local flat repository's index (for locked builds). Pure text in, text out.
 */
import { KilnError } from '../errors.js';
import { packageKey, type LockedPackage } from './file.js';

export interface IndexEntry { name: string; version: string; architecture: string; sha256: string; filename: string; size: number }

/** Splits an RFC 822-style control file into stanzas of fields (continuation lines kept). */
export function parseStanzas(text: string): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  let cur = new Map<string, string>();
  let last = '';
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (cur.size) out.push(cur);
      cur = new Map();
      last = '';
      continue;
    }
    if ((line[0] === ' ' || line[0] === '\t') && last) {
      cur.set(last, `${cur.get(last)}\n${line}`);
      continue;
    }
    const i = line.indexOf(':');
    if (i <= 0) continue;
    last = line.slice(0, i);
    cur.set(last, line.slice(i + 1).trim());
  }
  if (cur.size) out.push(cur);
  return out;
}

/** name:arch=version -> entry, from a Packages index (later stanzas do not override earlier ones). */
export function parsePackagesIndex(text: string, into = new Map<string, IndexEntry>()): Map<string, IndexEntry> {
  for (const s of parseStanzas(text)) {
    const name = s.get('Package');
    const version = s.get('Version');
    const architecture = s.get('Architecture');
    const sha256 = s.get('SHA256');
    const filename = s.get('Filename');
    if (!name || !version || !architecture || !sha256 || !filename) continue;
    const key = `${name}:${architecture}=${version}`;
    if (!into.has(key)) into.set(key, { name, version, architecture, sha256, filename, size: Number(s.get('Size') ?? 0) });
  }
  return into;
}

/** The lock entries for an installed package set; every package must be in the index at its installed version. */
export function lockEntries(installed: { name: string; version: string; arch: string }[], index: Map<string, IndexEntry>): LockedPackage[] {
  const missing: string[] = [];
  const out: LockedPackage[] = [];
  for (const p of installed) {
    const e = index.get(`${p.name}:${p.arch}=${p.version}`);
    if (!e) { missing.push(`${p.name} ${p.version} (${p.arch})`); continue; }
    out.push({ name: e.name, version: e.version, architecture: e.architecture, sha256: e.sha256, size: e.size, filename: e.filename });
  }
  if (missing.length) {
    throw new KilnError(`${missing.length} installed package(s) are not in the archive's signed index, so they cannot be locked: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`, {
      detail: missing.join('\n'),
      hint: 'a lock holds only packages from source.debian (not local .debs or other repositories); if the mirror changed during the run, run `kiln lock` again',
    });
  }
  return out;
}

/** apt's name for a file of an archive in /var/lib/apt/lists (URItoFileName): scheme dropped, "/" -> "_". */
export function aptListName(mirror: string, path: string): string {
  const uri = `${mirror.replace(/\/+$/, '')}/${path}`.replace(/^[a-z]+:\/\/(?:[^@/]*@)?/, '');
  return uri.replace(/_/g, '%5f').replace(/\//g, '_');
}

/** One stanza of the local repository's index: the .deb's own control fields, then where and what it is. */
export function repoStanza(control: string, p: LockedPackage, filename: string): string {
  const fields = control.trimEnd().split('\n').filter((l) => !/^(Filename|Size|MD5sum|SHA1|SHA256):/.test(l));
  return [...fields, `Filename: ${filename}`, `Size: ${p.size}`, `SHA256: ${p.sha256}`, ''].join('\n');
}

/** The Release file of the local repository: only the Packages hash (apt checks it even for trusted=yes). */
export function repoRelease(packagesSha256: string, packagesSize: number, date: number): string {
  return [
    'Origin: kiln-lock',
    'Label: kiln-lock',
    `Date: ${new Date(date * 1000).toUTCString().replace('GMT', 'UTC')}`,
    'SHA256:',
    ` ${packagesSha256} ${packagesSize} Packages`,
    '',
  ].join('\n');
}

export { packageKey };
