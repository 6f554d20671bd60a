/**
 * `kiln diff a b`: what changed between two releases of an image (or a release and a snapshot
 * build): packages (from the records, the SBOM's source), the Debian changelog entries between the
 * two versions of each changed package, files (a lossless read of both root trees through fuse2fs,
 * src/reproduce/treediff.ts), the repository (git, when both commits are in the repository kiln runs
 * in), the seal and audit settings, artifact sizes, and who signed.
 *
 * Trust: each side's disk is the one its release names, verified on read (the store's resolve hashes
 * it; a snapshot's raw disk is hashed against its build.json). Nothing in an image is followed out of
 * it: files are compared with lstat and readlink, changelogs are read inside the tree.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { KilnError } from '../errors.js';
import { sha256OfFile } from '../fsio.js';
import { inspectDiskFile } from '../image/disk-file.js';
import { withMountedFilesystem } from '../image/mount.js';
import { rootOffset } from '../image/root-fs.js';
import type { Logger } from '../log.js';
import { diffTrees } from '../reproduce/treediff.js';
import type { SourcePackage } from '../store/record.js';
import { entriesBetween, readImageChangelog, versionLess, type ChangelogEntry } from './changelog.js';

/** One side of a diff: a release in a store, or a snapshot build's output directory. */
export interface DiffSide {
  /** name@version, or the build directory for a snapshot. */
  label: string;
  name: string;
  version: string;
  kind: 'release' | 'snapshot';
  digest?: string;
  commit: string;
  /** kiln.yaml's path in the repository. */
  template?: string;
  packages: SourcePackage[];
  artifacts: { format: string; size: number; sha256: string }[];
  /** A raw disk of this side, verified against its digest; undefined when none is at hand (files are then not compared). */
  raw?: string;
  /** Why raw is undefined. */
  rawMissing?: string;
  /** Who signed (releases): "signer" or "signer (untrusted)". */
  signers: string[];
  parent?: string;
}

export interface PackageChange { name: string; arch: string; from: string; to: string; direction: 'upgrade' | 'downgrade'; changelog?: ChangelogEntry[]; changelogMissing?: string; security: boolean; cves: string[] }
export interface FileChange { path: string; change: 'added' | 'removed' | 'changed'; what: string[] }

export interface DiffReport {
  a: Omit<DiffSide, 'raw' | 'packages'>;
  b: Omit<DiffSide, 'raw' | 'packages'>;
  packages: { added: SourcePackage[]; removed: SourcePackage[]; changed: PackageChange[]; unchanged: number };
  files?: FileChange[];
  filesSkipped?: string;
  git?: { files: { status: string; path: string; added: number; removed: number }[]; patch?: string };
  gitSkipped?: string;
  /** kiln.yaml's seal and audit sections where they differ (JSON of each side). */
  settings: { key: string; a: unknown; b: unknown }[];
  audit: string;
  artifacts: { format: string; a?: number; b?: number }[];
  signers: { a: string[]; b: string[] };
}

const key = (p: { name: string; arch: string }) => `${p.name}:${p.arch}`;

/** Packages added, removed and changed between two package lists (by name and architecture). */
export function diffPackages(a: SourcePackage[], b: SourcePackage[], less: (x: string, y: string) => boolean): DiffReport['packages'] {
  const ma = new Map(a.map((p) => [key(p), p]));
  const mb = new Map(b.map((p) => [key(p), p]));
  const byName = (x: SourcePackage, y: SourcePackage) => key(x).localeCompare(key(y));
  const added = b.filter((p) => !ma.has(key(p))).sort(byName);
  const removed = a.filter((p) => !mb.has(key(p))).sort(byName);
  const changed: PackageChange[] = [];
  let unchanged = 0;
  for (const p of [...b].sort(byName)) {
    const old = ma.get(key(p));
    if (!old) continue;
    if (old.version === p.version) { unchanged++; continue; }
    changed.push({ name: p.name, arch: p.arch, from: old.version, to: p.version, direction: less(old.version, p.version) ? 'upgrade' : 'downgrade', security: false, cves: [] });
  }
  return { added, removed, changed, unchanged };
}

/**
 * Paths every release changes by itself: the version stamp, and the files naming the filesystem ids
 * (derived from the name and version, src/disk) listed apart in the text as expected. A playbook
 * that edits one of them still shows: the text names them, --json lists them like any other.
 */
export const PER_RELEASE_PATHS = ['/etc/release', '/etc/os-release', '/usr/lib/os-release', '/etc/fstab', '/boot/grub/grub.cfg'];

/** The file changes of a tree diff: mtimes and link counts are not changes (every build clamps times to its commit's). */
export function fileChanges(diff: { path: string; what: string[] }[]): FileChange[] {
  const out: FileChange[] = [];
  for (const d of diff) {
    if (d.what.includes('only in a')) { out.push({ path: d.path, change: 'removed', what: [] }); continue; }
    if (d.what.includes('only in b')) { out.push({ path: d.path, change: 'added', what: [] }); continue; }
    const what = d.what.filter((w) => !/^(mtime|links) /.test(w));
    if (what.length) out.push({ path: d.path, change: 'changed', what });
  }
  return out;
}

/** Whether a commit is in the repository at cwd. */
function haveCommit(cwd: string, commit: string): boolean {
  return /^[0-9a-f]{7,64}$/.test(commit) && spawnSync('git', ['-C', cwd, 'cat-file', '-e', `${commit}^{commit}`], { stdio: 'ignore' }).status === 0;
}

function git(cwd: string, args: string[]): string {
  const r = spawnSync('git', ['-C', cwd, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new KilnError(`git ${args.join(' ')} failed`, { detail: r.stderr });
  return r.stdout;
}

/** The repository's changes between the two commits (name-status with line counts, and the patch up to 256 KiB). */
function gitChanges(cwd: string, a: string, b: string): NonNullable<DiffReport['git']> {
  const counts = new Map<string, [number, number]>();
  for (const l of git(cwd, ['diff', '--numstat', '-z', '--no-renames', a, b]).split('\0').filter(Boolean)) {
    const [ad, rm, ...rest] = l.split('\t');
    counts.set(rest.join('\t'), [Number(ad) || 0, Number(rm) || 0]);
  }
  const parts = git(cwd, ['diff', '--name-status', '-z', '--no-renames', a, b]).split('\0').filter(Boolean);
  const files: { status: string; path: string; added: number; removed: number }[] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) {
    const [added, removed] = counts.get(parts[i + 1]) ?? [0, 0];
    files.push({ status: parts[i], path: parts[i + 1], added, removed });
  }
  const patch = git(cwd, ['diff', '--no-color', '--no-renames', a, b]);
  return { files, patch: patch.length > 256 * 1024 ? `${patch.slice(0, 256 * 1024)}\n[… cut at 256 KiB]` : patch };
}

/** kiln.yaml's seal and audit sections at a commit (undefined when it cannot be read). */
function settingsAt(cwd: string, commit: string, template: string | undefined): Record<string, unknown> | undefined {
  const r = spawnSync('git', ['-C', cwd, 'show', `${commit}:${template ?? 'kiln.yaml'}`], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  try {
    const doc = parseYaml(r.stdout) as Record<string, unknown> | null;
    return { seal: doc?.seal ?? null, audit: doc?.audit ?? null };
  } catch {
    return undefined;
  }
}

function flatten(v: unknown, prefix: string, out: Map<string, unknown>): void {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, v);
}

export interface DiffOptions {
  /** Where git is asked for the commits (the image repository). */
  cwd: string;
  scratch: string;
  logger: Logger;
  /** Compare the root trees (default true). */
  files?: boolean;
  less?: (x: string, y: string) => boolean;
  signal?: AbortSignal;
}

/** Hashes a snapshot's raw disk against its build record: an altered file is refused, not compared. */
export async function checkedRaw(file: string, sha256: string): Promise<string> {
  const got = await sha256OfFile(file);
  if (got !== sha256) throw new KilnError(`${file} does not match its build record (sha256 ${got}, recorded ${sha256})`, { where: { file }, hint: 'the build output was changed after the build: build it again' });
  return file;
}

export async function diffSides(a: DiffSide, b: DiffSide, o: DiffOptions): Promise<DiffReport> {
  const less = o.less ?? versionLess;
  const strip = (s: DiffSide) => { const { raw: _r, packages: _p, ...rest } = s; return rest; };
  const report: DiffReport = {
    a: strip(a), b: strip(b),
    packages: diffPackages(a.packages, b.packages, less),
    settings: [],
    audit: 'clean in both: a release (and a finished build) exists only when the audit of its disk found nothing',
    artifacts: [...new Set([...a.artifacts, ...b.artifacts].map((x) => x.format))].sort().map((f) => ({ format: f, a: a.artifacts.find((x) => x.format === f)?.size, b: b.artifacts.find((x) => x.format === f)?.size })),
    signers: { a: a.signers, b: b.signers },
  };
  // The repository: only when both commits are here (a diff of two releases from elsewhere says so).
  const [hasA, hasB] = [haveCommit(o.cwd, a.commit), haveCommit(o.cwd, b.commit)];
  if (a.commit === b.commit) report.git = { files: [] };
  else if (hasA && hasB) report.git = gitChanges(o.cwd, a.commit, b.commit);
  else report.gitSkipped = `commits ${a.commit.slice(0, 12)} and ${b.commit.slice(0, 12)} are not both in the repository at ${o.cwd}: run kiln diff in the image's repository`;
  const sa = hasA ? settingsAt(o.cwd, a.commit, a.template) : undefined;
  const sb = hasB ? settingsAt(o.cwd, b.commit, b.template) : undefined;
  if (sa && sb) {
    const [fa, fb] = [new Map<string, unknown>(), new Map<string, unknown>()];
    flatten(sa, '', fa);
    flatten(sb, '', fb);
    for (const k of [...new Set([...fa.keys(), ...fb.keys()])].sort()) {
      if (JSON.stringify(fa.get(k)) !== JSON.stringify(fb.get(k))) report.settings.push({ key: k, a: fa.get(k) ?? null, b: fb.get(k) ?? null });
    }
  }
  const needChangelogs = report.packages.changed.length > 0;
  if (o.files === false) {
    report.filesSkipped = 'not asked for (--no-files)';
    for (const c of report.packages.changed) c.changelogMissing = 'the images were not read (--no-files)';
    return report;
  }
  if (!a.raw || !b.raw) {
    report.filesSkipped = [a, b].filter((s) => !s.raw).map((s) => `${s.label}: ${s.rawMissing ?? 'no raw disk'}`).join('; ');
    for (const c of report.packages.changed) c.changelogMissing = 'the newer image was not read';
    return report;
  }
  for (const f of [a.raw, b.raw]) {
    const facts = inspectDiskFile(f);
    if (facts.format !== 'raw') throw new KilnError(`${f}: expected a raw disk, found ${facts.detail}`, { where: { file: f } });
  }
  const scratch = mkdtempSync(join(o.scratch, 'diff-'));
  try {
    await withMountedFilesystem(a.raw, rootOffset(a.raw), scratch, (ta) => withMountedFilesystem(b.raw as string, rootOffset(b.raw as string), scratch, async (tb) => {
      const diff = await diffTrees(ta.root, tb.root, { sides: ['a', 'b'], expand: true });
      ta.check();
      tb.check();
      report.files = fileChanges(diff);
      if (needChangelogs) {
        for (const c of report.packages.changed) {
          // The newer side's changelog lists the versions between (a downgrade's older side is b: read a's).
          const [root, from, to] = c.direction === 'upgrade' ? [tb.root, c.from, c.to] : [ta.root, c.to, c.from];
          const all = readImageChangelog(root, c.name);
          if (!all) { c.changelogMissing = `the image has no /usr/share/doc/${c.name}/changelog.Debian.gz`; continue; }
          c.changelog = entriesBetween(all, from, to);
          c.cves = [...new Set(c.changelog.flatMap((e) => e.cves))].sort();
          c.security = c.changelog.some((e) => e.security);
        }
      }
    }, o.logger), o.logger);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return report;
}
