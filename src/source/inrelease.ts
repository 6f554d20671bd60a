/**
 * An archive's InRelease, read only through its signature: gpgv checks it against the keyring and
 * writes out the text it verified (--output), and every field Kiln uses (Date, Valid-Until, the
 * SHA256 lines of the index files) is parsed from that text alone. Whatever a mirror, a cache or
 * an attacker puts around the signed message (a Date: line before it, a SHA256: section after it)
 * is never read. apt reads InRelease the same way.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';

export interface IndexHash { sha256: string; size: number }

/** What an InRelease says, from its signed text (verified, or read as is when source.debian.verify is false). */
export interface ReleaseText {
  /** sha256 of the InRelease file, signature and all. */
  inReleaseSha256: string;
  verified: boolean;
  /** Fingerprint of the key gpgv found the signature valid for (VALIDSIG). */
  signedBy?: string;
  /** Date: as an epoch. */
  date: number;
  /** Valid-Until: as an epoch, when the archive sets it. */
  validUntil?: number;
  /** path (e.g. main/binary-amd64/Packages) -> sha256 and size, from the SHA256 section. */
  hashes: Map<string, IndexHash>;
}

/** The signed text of a clearsigned message without armour or dash-escapes (for an unverified archive only). */
export function signedText(inRelease: string): string {
  const m = /^-----BEGIN PGP SIGNED MESSAGE-----\r?\n(?:[^\n]+\r?\n)*?\r?\n([\s\S]*?)\r?\n-----BEGIN PGP SIGNATURE-----/m.exec(inRelease);
  if (!m) throw new KilnError('the archive\'s InRelease is not a clearsigned message');
  return m[1].split('\n').map((l) => (l.startsWith('- ') ? l.slice(2) : l)).join('\n');
}

/** path -> { sha256, size } from the SHA256 section of a Release text. */
export function releaseHashes(release: string): Map<string, IndexHash> {
  const out = new Map<string, IndexHash>();
  let inSha = false;
  for (const line of release.split('\n')) {
    if (/^SHA256:\s*$/.test(line)) { inSha = true; continue; }
    if (inSha && /^\s/.test(line)) {
      const [sha256, size, path] = line.trim().split(/\s+/);
      if (/^[0-9a-f]{64}$/.test(sha256) && path) out.set(path, { sha256, size: Number(size) });
      continue;
    }
    inSha = false;
  }
  return out;
}

/** The single-line fields of a Release text's one stanza (the SHA256 sections are read by releaseHashes). */
function releaseField(release: string, name: string): string | undefined {
  for (const line of release.split('\n')) {
    if (line.trim() === '') break;
    const i = line.indexOf(':');
    if (i > 0 && line[0] !== ' ' && line.slice(0, i) === name) return line.slice(i + 1).trim();
  }
  return undefined;
}

function epochOf(value: string | undefined, field: string, what: string): number | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value.replace(/ UTC$/, ' GMT'));
  if (!Number.isFinite(t)) throw new KilnError(`${what}: ${field} is not a date: ${value}`);
  return Math.floor(t / 1000);
}

/** Date, Valid-Until and the index hashes of a Release text (the signed text of an InRelease). */
export function releaseFields(text: string, what: string): Pick<ReleaseText, 'date' | 'validUntil' | 'hashes'> {
  const date = epochOf(releaseField(text, 'Date'), 'Date', what);
  if (date === undefined) throw new KilnError(`${what} has no Date: field in its signed text`);
  const validUntil = epochOf(releaseField(text, 'Valid-Until'), 'Valid-Until', what);
  return { date, ...(validUntil !== undefined ? { validUntil } : {}), hashes: releaseHashes(text) };
}

/**
 * Checks file's signature with gpgv against keyring and returns what its signed text says. `what`
 * names the file in errors (a URL, or a path in kiln.lock.d).
 */
export async function verifyInRelease(file: string, keyring: string, logger: Logger, what = file): Promise<ReleaseText> {
  const bytes = readFileSync(file);
  const dir = mkdtempSync(join(tmpdir(), 'kiln-inrelease-'));
  try {
    const out = join(dir, 'signed');
    // gpgv writes the verified text to a file of its own: its status lines on stdout stay unmixed.
    const v = await exec('gpgv', ['--status-fd', '1', '--keyring', keyring, '--output', out, file], { allowFailure: true, logger });
    const valid = /^\[GNUPG:\] VALIDSIG ([0-9A-F]+)/m.exec(v.stdout);
    if (v.code !== 0 || !valid) {
      throw new KilnError(`${what} is not signed by a key in ${keyring}`, {
        detail: v.stderr,
        hint: 'refusing an unverifiable source; use the right keyring, or set source.debian.verify: false to opt out explicitly',
      });
    }
    const text = readFileSync(out, 'utf8');
    return { inReleaseSha256: sha256Hex(bytes), verified: true, signedBy: valid[1], ...releaseFields(text, what) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What an InRelease says when source.debian.verify is false: its body as is, nothing vouching for it. */
export function unverifiedInRelease(file: string, what = file): ReleaseText {
  const bytes = readFileSync(file);
  const s = bytes.toString('utf8');
  // An unsigned Release served as InRelease is accepted here: verify: false has opted out of signatures.
  const text = s.includes('-----BEGIN PGP SIGNED MESSAGE-----') ? signedText(s) : s;
  return { inReleaseSha256: sha256Hex(bytes), verified: false, ...releaseFields(text, what) };
}

function sha256Hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

const UNIT_SECONDS = { h: 3600, d: 86400, w: 7 * 86400 } as const;
/** source.debian.max_age's syntax: a whole number of hours, days or weeks. */
export const MAX_AGE_PATTERN = '^[1-9][0-9]{0,4}[hdw]$';

export function maxAgeSeconds(s: string): number {
  const m = /^([1-9][0-9]{0,4})([hdw])$/.exec(s);
  if (!m) throw new KilnError(`source.debian.max_age: ${JSON.stringify(s)} is not an age like 30d, 12h or 8w`);
  return Number(m[1]) * UNIT_SECONDS[m[2] as keyof typeof UNIT_SECONDS];
}

function iso(epoch: number): string {
  return new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Refuses archive metadata that is too old (by its signed Date) or past its signed Valid-Until:
 * a mirror that stopped updating, or a replay of an old, validly signed InRelease that would hold
 * the build to packages with known holes. Only for builds that resolve against the archive as it
 * is now: a locked build uses the InRelease kept with kiln.lock and checks its chain, not its age.
 */
export function checkFreshness(r: Pick<ReleaseText, 'date' | 'validUntil'>, o: { maxAge: string; now?: number; what: string }): void {
  const now = Math.floor((o.now ?? Date.now()) / 1000);
  const hint = 'a mirror that stopped syncing, or an old InRelease replayed to hold the build to old packages. If the mirror is current, '
    + 'raise source.debian.max_age in kiln.yaml. To build on purpose from old metadata (a snapshot.debian.org date), build from kiln.lock: '
    + 'a locked build checks the signature and hash chain of the InRelease kept in kiln.lock.d, not its age';
  if (r.validUntil !== undefined && now > r.validUntil) {
    throw new KilnError(`${o.what} expired: its signed Valid-Until is ${iso(r.validUntil)}`, { hint });
  }
  const limit = maxAgeSeconds(o.maxAge);
  if (now - r.date > limit) {
    const days = Math.floor((now - r.date) / 86400);
    throw new KilnError(`${o.what} is ${days} days old (signed Date ${iso(r.date)}), older than source.debian.max_age (${o.maxAge})`, { hint });
  }
}
