/**
 * kiln.lock: what an image is built from, pinned. For an image built from the Debian archive, the
 * exact package set, one package per entry, sorted. Every sha256
 * is the one the archive's signed Packages index gave for that .deb when `kiln lock` ran. The text
 * is produced here byte for byte (one flow mapping per line), so a lock diff is a package diff.
 *
 * The signed InRelease each set was resolved from is kept beside it, byte for byte, as
 * kiln.lock.d/<sha256>.InRelease (the archive's `inRelease`), so a locked build verifies the whole
 * chain again from the repository alone: signature, Packages index hash, each .deb's sha256. It is a
 * file of its own, not embedded: gpgv checks the exact bytes the archive signed, and the ~150 KB of
 * signed text would bury the package diff that kiln.lock is read for. Named by its digest, a new
 * one is written before the kiln.lock that names it, so a crash never leaves a lock without its InRelease.
 *
 * For an image built on a vendor image (source.image) or on an earlier Kiln release (source.release),
 * kiln.lock pins that upstream instead (format 3, `upstream:`): the image's sha256 and sha512, or the
 * parent release's digest. A locked build checks the bytes against these on every build, so the same
 * lock always means the same upstream bytes even when a channel moves or a vendor republishes.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isMap, isSeq, LineCounter, parseDocument, parse as parseYaml } from 'yaml';
import { yamlSyntaxProblems } from '../yaml-errors.js';
import { KilnError } from '../errors.js';

export const LOCK_FILE = 'kiln.lock';
/** Beside kiln.lock: the signed InRelease files it was resolved from. */
export const LOCK_DIR = 'kiln.lock.d';
/** Format 2 added the signed InRelease (kiln.lock.d) and the Packages index hashes; format 1 is read only to diff against. */
export const LOCK_FORMAT = 2;
/**
 * Format 3: a lock that pins an upstream image or release (`upstream:`) instead of an archive package
 * set. Archive locks stay format 2, so existing kiln.lock files do not change; a Kiln that reads only
 * format 2 refuses a format 3 lock by its number instead of misreading it.
 */
export const LOCK_FORMAT_UPSTREAM = 3;

export interface LockedPackage {
  name: string;
  version: string;
  architecture: string;
  /** sha256 of the .deb, from the signed Packages index. */
  sha256: string;
  /** Path of the .deb in the archive (pool/...), the same on the mirror and on snapshot mirrors. */
  filename: string;
  size: number;
}

export interface LockArchive {
  mirror: string;
  suite: string;
  components: string[];
  /** The Date: of the InRelease the index came from; the base tree's SOURCE_DATE_EPOCH. */
  date: number;
  /** sha256 of that InRelease, kept as kiln.lock.d/<sha256>.InRelease, and the key that signed it (absent when source.debian.verify was false). */
  inRelease: string;
  signedBy?: string;
  verified: boolean;
  /** The Packages index of each component, as the signed InRelease gives its sha256 (uncompressed). */
  indexes: LockedIndex[];
}

/** One Packages index the lock's entries come from: its path in dists/<suite>/ and its SHA256 line in the InRelease. */
export interface LockedIndex { path: string; sha256: string; size: number }

/** Where the InRelease of a locked set is kept, beside kiln.lock. */
export function inReleasePath(lockFile: string, a: { inRelease: string }): string {
  return join(lockFile, '..', LOCK_DIR, `${a.inRelease}.InRelease`);
}

/** The Packages index path of a component in an InRelease (amd64: the only architecture Kiln builds). */
export function packagesIndexPath(component: string): string {
  return `${component}/binary-amd64/Packages`;
}

/** Packages from one signed archive: the image's, or the tools tree's. */
export interface LockedSet {
  archive: LockArchive;
  packages: LockedPackage[];
}

/** A vendor image, as it verified when `kiln lock` ran. */
export interface LockedImage {
  url: string;
  /** For an AMI (ec2:// url): the image id it resolved to; a locked build reads this AMI, whatever a name pattern now matches. */
  ami?: string;
  sha256: string;
  sha512: string;
  size: number;
}
/** A parent release: the reference kiln.yaml names and the release it resolved to. */
export interface LockedRelease { ref: string; name: string; version: string; digest: string }
/** The upstream of an image that does not start from the archive: exactly one of the two. */
export type LockedUpstream = { image: LockedImage; release?: never } | { release: LockedRelease; image?: never };

export interface LockFile {
  lock: number;
  image: string;
  /** The archive the image's packages come from (format 2); absent when upstream is set. */
  archive?: LockArchive;
  packages?: LockedPackage[];
  /** The vendor image or parent release the image starts from (format 3). */
  upstream?: LockedUpstream;
  /** The tools tree the build runs Ansible from (provision.ansible), absent for the host's Ansible. */
  tools?: LockedSet;
}

/** A lock of the archive's package set (format 2). */
export type ArchiveLockFile = LockFile & LockedSet;

/** The lock's archive package set, when it pins one. */
export function archiveSet(l: LockFile): LockedSet | undefined {
  return l.archive && l.packages ? { archive: l.archive, packages: l.packages } : undefined;
}

/** What a lock pins, in words: "412 packages", "the vendor image sha256:…", "base@release-1.2.0 (sha256:…)". */
export function describeLock(l: LockFile): string {
  if (l.upstream?.image) return `the vendor image ${l.upstream.image.url} (sha256 ${l.upstream.image.sha256.slice(0, 16)}…)`;
  if (l.upstream?.release) return `the parent release ${l.upstream.release.name}@${l.upstream.release.version} (${l.upstream.release.digest.slice(0, 19)}…)`;
  return `${l.packages?.length ?? 0} packages`;
}

export function packageKey(p: { name: string; architecture: string }): string {
  return `${p.name}:${p.architecture}`;
}

export function sortPackages(ps: LockedPackage[]): LockedPackage[] {
  return [...ps].sort((a, b) => cmp(a.name, b.name) || cmp(a.architecture, b.architecture));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isoFromEpoch(s: number): string {
  return new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The lock as text: stable field order, sorted packages, JSON-quoted strings (valid YAML). */
export function formatLock(l: LockFile): string {
  const q = JSON.stringify;
  const archive = (a: LockArchive, indent: string) => [
    `${indent}archive:`,
    `${indent}  mirror: ${q(a.mirror)}`,
    `${indent}  suite: ${q(a.suite)}`,
    `${indent}  components: [${a.components.map((c) => q(c)).join(', ')}]`,
    `${indent}  date: ${q(isoFromEpoch(a.date))}`,
    `${indent}  inRelease: ${q(a.inRelease)} # ${LOCK_DIR}/${a.inRelease.slice(0, 12)}….InRelease`,
    ...(a.signedBy ? [`${indent}  signedBy: ${q(a.signedBy)}`] : []),
    `${indent}  verified: ${a.verified}`,
    `${indent}  indexes:`,
    ...a.indexes.map((x) => `${indent}    - { path: ${q(x.path)}, sha256: ${q(x.sha256)}, size: ${x.size} }`),
  ];
  const packages = (ps: LockedPackage[], indent: string) => [
    `${indent}packages: # ${ps.length}`,
    ...sortPackages(ps).map((p) =>
      `${indent}  - { name: ${q(p.name)}, version: ${q(p.version)}, architecture: ${q(p.architecture)}, sha256: ${q(p.sha256)}, size: ${p.size}, filename: ${q(p.filename)} }`),
  ];
  const set = archiveSet(l);
  const up = l.upstream;
  const head = up ? [
    `# kiln.lock: the upstream image ${q(l.image)} is built on. Written by \`kiln lock\`; commit it.`,
    up.image
      ? '# Builds use exactly this vendor image: its sha256 and sha512 are checked on every build, besides the checks in kiln.yaml.'
      : '# Builds use exactly this parent release (its digest), even after a channel it was named by has moved; the trust policy is applied again on every build.',
    "# Packages the playbook installs come from the upstream's own apt sources and are not pinned here.",
    '# `kiln lock --update` resolves kiln.yaml again and shows what changed.',
  ] : [
    `# kiln.lock: the exact Debian packages of image ${q(l.image)}. Written by \`kiln lock\`; commit it.`,
    '# Builds install exactly these; `kiln lock --update` re-resolves and shows what changed.',
    `# Each sha256 is the one the archive's signed Packages index gave for that .deb; the signed InRelease is in ${LOCK_DIR}/ (commit it too).`,
  ];
  const upstream = !up ? [] : up.image
    ? ['upstream:', `  image: { url: ${q(up.image.url)}, ${up.image.ami ? `ami: ${q(up.image.ami)}, ` : ''}sha256: ${q(up.image.sha256)}, sha512: ${q(up.image.sha512)}, size: ${up.image.size} }`]
    : ['upstream:', `  release: { ref: ${q(up.release.ref)}, name: ${q(up.release.name)}, version: ${q(up.release.version)}, digest: ${q(up.release.digest)} }`];
  const lines = [
    ...head,
    `lock: ${l.lock}`,
    `image: ${q(l.image)}`,
    ...upstream,
    ...(set ? [...archive(set.archive, ''), ...packages(set.packages, '')] : []),
    ...(l.tools ? ['# The tools tree: the Debian packages Ansible runs from at build time (provision.ansible).', 'tools:', ...archive(l.tools.archive, '  '), ...packages(l.tools.packages, '  ')] : []),
    '',
  ];
  return lines.join('\n');
}

/** Parses and checks a lock file; errors name the file and the entry. */
export function parseLock(text: string, file = LOCK_FILE): LockFile {
  const syntax = yamlSyntaxProblems(text);
  if (syntax.length) {
    const [p] = syntax;
    throw new KilnError(`${file} is not valid YAML: ${p.message.replace(/^invalid YAML: /, '')}`, { where: { file, line: p.line, column: p.column }, hint: 'regenerate it with `kiln lock --update`' });
  }
  const doc: unknown = parseYaml(text);
  const bad = (what: string): never => { throw new KilnError(`${file}: ${what}`, { where: { file }, hint: 'kiln.lock is written by `kiln lock`; regenerate it with `kiln lock --update`' }); };
  if (!doc || typeof doc !== 'object') bad('not a lock file');
  const d = doc as Record<string, unknown>;
  if (d.lock !== LOCK_FORMAT && d.lock !== LOCK_FORMAT_UPSTREAM && d.lock !== 1) bad(`unsupported lock format ${String(d.lock)} (this Kiln reads formats 1 to ${LOCK_FORMAT_UPSTREAM})`);
  const format = d.lock as number;
  let set: Partial<LockedSet> = {};
  let upstream: LockedUpstream | undefined;
  if (format === LOCK_FORMAT_UPSTREAM) {
    if (d.archive !== undefined || d.packages !== undefined) bad(`a format ${LOCK_FORMAT_UPSTREAM} lock pins an upstream, not archive packages: archive and packages do not belong in it`);
    upstream = parseUpstream(d.upstream, bad);
  } else {
    if (d.upstream !== undefined) bad(`upstream: only a format ${LOCK_FORMAT_UPSTREAM} lock pins an upstream image or release`);
    set = { archive: parseArchive(d.archive, 'archive', bad, format), packages: parsePackages(d.packages, 'packages', bad) };
  }
  let tools: LockedSet | undefined;
  if (d.tools !== undefined) {
    const t = d.tools as Record<string, unknown> | null;
    if (!t || typeof t !== 'object') bad('tools: must hold archive and packages');
    tools = { archive: parseArchive(t!.archive, 'tools.archive', bad, format), packages: parsePackages(t!.packages, 'tools.packages', bad) };
  }
  return { lock: format, image: String(d.image ?? ''), ...set, ...(upstream ? { upstream } : {}), ...(tools ? { tools } : {}) };
}

const SHA256 = /^[0-9a-f]{64}$/;
const SHA512 = /^[0-9a-f]{128}$/;

function parseUpstream(v: unknown, bad: (what: string) => never): LockedUpstream {
  const u = v as Record<string, unknown> | null | undefined;
  if (!u || typeof u !== 'object' || Array.isArray(u)) return bad('upstream: must hold image or release');
  const keys = Object.keys(u);
  if (keys.length !== 1 || !['image', 'release'].includes(keys[0])) return bad(`upstream: must hold exactly one of image and release (found ${keys.join(', ') || 'nothing'})`);
  const x = u[keys[0]] as Record<string, unknown> | null;
  if (!x || typeof x !== 'object') return bad(`upstream.${keys[0]}: must be a mapping`);
  if (keys[0] === 'image') {
    if (typeof x.url !== 'string' || !x.url) bad('upstream.image.url is missing');
    if (typeof x.sha256 !== 'string' || !SHA256.test(x.sha256)) bad('upstream.image.sha256 must be 64 lower-case hex digits');
    if (typeof x.sha512 !== 'string' || !SHA512.test(x.sha512)) bad('upstream.image.sha512 must be 128 lower-case hex digits');
    if (!Number.isSafeInteger(x.size) || (x.size as number) <= 0) bad('upstream.image.size must be a byte count');
    if (x.ami !== undefined && (typeof x.ami !== 'string' || !/^ami-[0-9a-f]{8,17}$/.test(x.ami))) bad('upstream.image.ami must be an AMI id (ami-…)');
    return { image: { url: x.url as string, ...(typeof x.ami === 'string' ? { ami: x.ami } : {}), sha256: x.sha256 as string, sha512: x.sha512 as string, size: x.size as number } };
  }
  for (const f of ['ref', 'name', 'version']) if (typeof x[f] !== 'string' || !x[f]) bad(`upstream.release.${f} is missing`);
  if (typeof x.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(x.digest)) bad('upstream.release.digest must be sha256:<64 lower-case hex digits>');
  return { release: { ref: x.ref as string, name: x.name as string, version: x.version as string, digest: x.digest as string } };
}

function parseArchive(v: unknown, where: string, bad: (what: string) => never, format: number): LockArchive {
  const a = v as Record<string, unknown> | undefined;
  if (!a || typeof a.mirror !== 'string' || typeof a.suite !== 'string' || !Array.isArray(a.components)) bad(`${where}: mirror, suite and components are required`);
  const date = Date.parse(String(a!.date));
  if (!Number.isFinite(date)) bad(`${where}.date is not a date: ${String(a!.date)}`);
  const inRelease = String(a!.inRelease ?? '');
  const indexes: LockedIndex[] = [];
  // Format 1 had neither (it is read only to show what `kiln lock --update` changes).
  if (format !== 1) {
    if (!/^[0-9a-f]{64}$/.test(inRelease)) bad(`${where}.inRelease must be the sha256 of the InRelease in ${LOCK_DIR}/`);
    if (!Array.isArray(a!.indexes) || a!.indexes.length === 0) bad(`${where}.indexes: the list of Packages index hashes is missing`);
    for (const [i, x] of (a!.indexes as Record<string, unknown>[]).entries()) {
      if (typeof x?.path !== 'string' || typeof x.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(x.sha256) || !Number.isSafeInteger(x.size)) bad(`${where}.indexes[${i}]: path, sha256 (64 hex digits) and size are required`);
      indexes.push({ path: x.path as string, sha256: x.sha256 as string, size: x.size as number });
    }
  }
  return {
    mirror: a!.mirror as string, suite: a!.suite as string, components: (a!.components as unknown[]).map(String), date: Math.floor(date / 1000),
    inRelease, signedBy: typeof a!.signedBy === 'string' ? a!.signedBy : undefined, verified: a!.verified === true, indexes,
  };
}

/**
 * The line of kiln.lock (1-based) holding a package's entry, for errors that name one: the parsed
 * lock keeps no positions, so the text is read again (only when there is an error to report).
 */
export function packageLine(text: string, p: { name: string; architecture: string }, tools = false): number | undefined {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  const list = doc.getIn(tools ? ['tools', 'packages'] : ['packages'], true);
  if (!isSeq(list)) return undefined;
  for (const item of list.items) {
    if (isMap(item) && item.get('name') === p.name && item.get('architecture') === p.architecture && item.range) return lc.linePos(item.range[0]).line;
  }
  return undefined;
}

function parsePackages(v: unknown, list: string, bad: (what: string) => never): LockedPackage[] {
  if (!Array.isArray(v) || v.length === 0) bad(`${list}: the list is missing or empty`);
  const seen = new Set<string>();
  const packages = (v as Record<string, unknown>[]).map((p, i) => {
    const where = `${list}[${i}]${p && typeof p.name === 'string' ? ` (${p.name})` : ''}`;
    for (const f of ['name', 'version', 'architecture', 'sha256', 'filename']) if (typeof p?.[f] !== 'string' || !p[f]) bad(`${where}: ${f} is missing`);
    if (!/^[0-9a-f]{64}$/.test(p.sha256 as string)) bad(`${where}: sha256 must be 64 lower-case hex digits`);
    if (!Number.isSafeInteger(p.size) || (p.size as number) < 0) bad(`${where}: size must be a byte count`);
    if ((p.filename as string).includes('..') || (p.filename as string).startsWith('/')) bad(`${where}: filename must be a path inside the archive`);
    const pkg: LockedPackage = { name: p.name as string, version: p.version as string, architecture: p.architecture as string, sha256: p.sha256 as string, size: p.size as number, filename: p.filename as string };
    const k = packageKey(pkg);
    if (seen.has(k)) bad(`${where}: ${k} is listed twice`);
    seen.add(k);
    return pkg;
  });
  return sortPackages(packages);
}

/** Digest of the locked package set alone (not the comments or archive metadata): the base tree's cache key input. */
export function packageSetDigest(l: { packages: LockedPackage[] }): string {
  const h = createHash('sha256');
  for (const p of sortPackages(l.packages)) h.update(`${p.name}\t${p.version}\t${p.architecture}\t${p.sha256}\n`);
  return h.digest('hex');
}

export interface LockChange {
  /** 'upstream': the pinned vendor image or parent release changed (name is "upstream", from/to describe each). */
  kind: 'added' | 'removed' | 'upgraded' | 'downgraded' | 'changed' | 'upstream';
  name: string;
  architecture: string;
  from?: string;
  to?: string;
  /** Set for a change of the tools tree's pins. */
  tools?: true;
}

/** What changed between two locks, package by package, sorted by name. */
export function diffLocks(before: LockFile | undefined, after: LockFile, compareVersions: (a: string, b: string) => number = naiveVersionCompare): LockChange[] {
  const was = before ? upstreamText(before) : undefined;
  const now = upstreamText(after);
  return [
    ...(was !== now && (was || now) ? [{ kind: 'upstream' as const, name: 'upstream', architecture: '', ...(was ? { from: was } : {}), ...(now ? { to: now } : {}) }] : []),
    ...diffSets(before?.packages ?? [], after.packages ?? [], compareVersions),
    ...diffSets(before?.tools?.packages ?? [], after.tools?.packages ?? [], compareVersions).map((c) => ({ ...c, tools: true as const })),
  ];
}

/** A lock's upstream as one comparable line; undefined for an archive lock. */
function upstreamText(l: LockFile): string | undefined {
  const u = l.upstream;
  if (u?.image) return `vendor image ${u.image.url}${u.image.ami ? ` (${u.image.ami})` : ''} sha256:${u.image.sha256}`;
  if (u?.release) return `${u.release.name}@${u.release.version} ${u.release.digest} (from ${u.release.ref})`;
  return undefined;
}

function diffSets(before: LockedPackage[], after: LockedPackage[], compareVersions: (a: string, b: string) => number): LockChange[] {
  const old = new Map(before.map((p) => [packageKey(p), p]));
  const cur = new Map(after.map((p) => [packageKey(p), p]));
  const out: LockChange[] = [];
  for (const [k, p] of cur) {
    const o = old.get(k);
    if (!o) out.push({ kind: 'added', name: p.name, architecture: p.architecture, to: p.version });
    else if (o.version !== p.version) out.push({ kind: compareVersions(o.version, p.version) < 0 ? 'upgraded' : 'downgraded', name: p.name, architecture: p.architecture, from: o.version, to: p.version });
    else if (o.sha256 !== p.sha256) out.push({ kind: 'changed', name: p.name, architecture: p.architecture, from: o.version, to: p.version });
  }
  for (const [k, o] of old) if (!cur.has(k)) out.push({ kind: 'removed', name: o.name, architecture: o.architecture, from: o.version });
  return out.sort((a, b) => cmp(a.name, b.name) || cmp(a.architecture, b.architecture));
}

export function formatChange(c: LockChange): string {
  const pkg = `${c.tools ? 'tools: ' : ''}${c.name} (${c.architecture})`;
  switch (c.kind) {
    case 'upstream': return `~ upstream: ${c.from ?? 'the Debian archive'} -> ${c.to ?? 'the Debian archive'}`;
    case 'added': return `+ ${pkg} ${c.to}`;
    case 'removed': return `- ${pkg} ${c.from}`;
    case 'changed': return `! ${pkg} ${c.to}: same version, different .deb (sha256)`;
    default: return `~ ${pkg} ${c.from} -> ${c.to}${c.kind === 'downgraded' ? ' (downgrade)' : ''}`;
  }
}

/**
 * Debian version order (epoch, upstream, revision; "~" sorts before everything), enough to tell an
 * upgrade from a downgrade in a lock diff.
 */
export function naiveVersionCompare(a: string, b: string): number {
  const split = (v: string): [number, string, string] => {
    const e = /^(\d+):(.*)$/.exec(v);
    const epoch = e ? Number(e[1]) : 0;
    const rest = e ? e[2] : v;
    const i = rest.lastIndexOf('-');
    return [epoch, i >= 0 ? rest.slice(0, i) : rest, i >= 0 ? rest.slice(i + 1) : '0'];
  };
  const [ea, ua, ra] = split(a);
  const [eb, ub, rb] = split(b);
  return ea - eb || debCompare(ua, ub) || debCompare(ra, rb);
}

function order(c: string): number {
  if (c === '~') return -1;
  if (/[A-Za-z]/.test(c)) return c.charCodeAt(0);
  return c.charCodeAt(0) + 256;
}

function debCompare(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let diff = 0;
    while ((i < a.length && !/\d/.test(a[i])) || (j < b.length && !/\d/.test(b[j]))) {
      const ac = i < a.length && !/\d/.test(a[i]) ? order(a[i]) : 0;
      const bc = j < b.length && !/\d/.test(b[j]) ? order(b[j]) : 0;
      if (ac !== bc) return ac - bc;
      i++; j++;
    }
    while (a[i] === '0') i++;
    while (b[j] === '0') j++;
    while (i < a.length && /\d/.test(a[i]) && j < b.length && /\d/.test(b[j])) {
      if (!diff) diff = a.charCodeAt(i) - b.charCodeAt(j);
      i++; j++;
    }
    if (i < a.length && /\d/.test(a[i])) return 1;
    if (j < b.length && /\d/.test(b[j])) return -1;
    if (diff) return diff;
  }
  return 0;
}

/** A snapshot.debian.org URL from the lock's archive date (what to suggest when the mirror moved on). */
export function snapshotUrlFor(l: LockedSet): string {
  const t = isoFromEpoch(l.archive.date).replace(/[-:]/g, '');
  return `https://snapshot.debian.org/archive/debian/${t}/`;
}

export function lockPath(templateDir: string): string {
  return join(templateDir, LOCK_FILE);
}

export function readLock(file: string): { lock: LockFile; sha256: string } {
  const text = readFileSync(file);
  return { lock: parseLock(text.toString('utf8'), file), sha256: createHash('sha256').update(text).digest('hex') };
}
