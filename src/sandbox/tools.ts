/**
 * The tools tree: the Ansible controller's root filesystem, a Debian tree Kiln builds with
 * mmdebstrap from a suite kiln.yaml names (mkosi's ToolsTree is the model). A build then runs the
 * same Ansible on any build host, and a role that needs ansible-core 2.16+ runs on a Debian 12 host.
 * It comes from the signed archive like the image's base (InRelease checked with gpgv, every
 * package by apt), is cached under a key of its inputs, and is only ever mounted read-only.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { exec } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';
import { treeDigest } from '../cache-entry.js';
import { extractTree, installedPackages, packTree, verifyArchive, type ArchiveTrust, type InstalledPackage } from '../source/debian.js';
import type { KilnConfig } from '../template/schema.js';
import { sha256OfFile, writeFileAtomic } from '../fsio.js';
import type { RemoteCache } from '../pipeline/remote-cache.js';

/** What the controller needs: Ansible with its collections (chroot connection, jsonl callback) and umount. */
export const TOOLS_PACKAGES = ['ansible', 'mount'] as const;
/** Suites a tools tree can be built from, and the ansible-core each ships. */
export const TOOLS_SUITES = { trixie: '2.19', bookworm: '2.14' } as const;
export type ToolsSuite = keyof typeof TOOLS_SUITES;

export interface ToolsSpec { suite: ToolsSuite; mirror: string; keyring: string; verify: boolean; max_age: string }

export interface ToolsTree {
  /** The tree (read-only in the sandbox). */
  root: string;
  key: string;
  suite: ToolsSuite;
  cached: boolean;
  /** Taken from the step cache shared through a registry (kiln build --cache). */
  remote?: boolean;
  trust: ArchiveTrust;
  /** The InRelease gpgv checked (absent when built from kiln.lock): `kiln lock` resolves the pins from it. */
  inReleaseFile?: string;
  packages: InstalledPackage[];
}

/** A tools tree from kiln.lock: exactly the pinned .debs, from Kiln's local repository of them. */
export interface LockedTools {
  /** `deb [trusted=yes] http://127.0.0.1:PORT/ ./` (every .deb in it was checked against the lock's sha256). */
  sourcesLine: string;
  /** Digest of the pinned package set (the cache key). */
  packageSet: string;
  /** What the chain check of the pins found (src/lock/chain.ts), not what the lock's text says. */
  trust: ArchiveTrust;
}

export function toolsKey(s: ToolsSpec, trust: ArchiveTrust): string {
  return createHash('sha256').update(JSON.stringify({
    v: 1, suite: s.suite, mirror: s.mirror, packages: [...TOOLS_PACKAGES], inRelease: trust.inReleaseSha256, verify: s.verify, keyring: trust.keyringSha256 ?? null,
  })).digest('hex');
}

/**
 * True when the cached tree <dir>/<key> is there with its record and its digest (treeDigest) is the
 * recorded one; a tree that is not (cut short, changed, or recorded by an older Kiln) is removed,
 * with a warning, so it is built again.
 */
export function intactTree(dir: string, key: string, logger: Logger): boolean {
  const root = join(dir, key);
  const record = join(dir, `${key}.json`);
  if (!existsSync(record) || !existsSync(root)) return false;
  let want: string | undefined;
  try { want = (JSON.parse(readFileSync(record, 'utf8')) as { treeDigest?: string }).treeDigest; } catch { want = undefined; }
  let problem: string | undefined;
  if (!want) problem = 'its record has no tree digest (written by an older Kiln) or is unreadable';
  else if (!existsSync(join(root, 'usr/bin/ansible-playbook'))) problem = 'it has no ansible-playbook';
  else {
    const got = treeDigest(root);
    if (got !== want) problem = `its digest is ${got.slice(0, 12)}…, its record says ${want.slice(0, 12)}…: a file changed or was cut short`;
  }
  if (!problem) return true;
  logger.warn(`cached tools tree ${root} is damaged (${problem}): discarded, building it again`);
  rmSync(root, { recursive: true, force: true });
  rmSync(record, { force: true });
  return false;
}

/** The tools tree for spec, built once per key into <cacheDir>/tools/<key>. */
export async function toolsTree(s: ToolsSpec, cacheDir: string, workDir: string, logger: Logger, onLine?: (l: string) => void, locked?: LockedTools, remote?: RemoteCache): Promise<ToolsTree> {
  const inReleaseFile = locked ? undefined : join(workDir, 'tools-InRelease');
  const trust = locked ? locked.trust : await verifyArchive({ ...s, components: ['main'], kernel: '', packages: [] }, workDir, logger, 'tools-InRelease');
  const key = locked
    ? createHash('sha256').update(JSON.stringify({ v: 2, suite: s.suite, packageSet: locked.packageSet, sde: trust.archiveDate })).digest('hex')
    : toolsKey(s, trust);
  const dir = join(cacheDir, 'tools');
  const root = join(dir, key);
  const record = join(dir, `${key}.json`);
  if (intactTree(dir, key, logger)) {
    const packages = (JSON.parse(readFileSync(record, 'utf8')) as { packages: InstalledPackage[] }).packages;
    shareTools(remote, key, root, record, logger);
    return { root, key, suite: s.suite, cached: true, trust, inReleaseFile, packages };
  }
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `${key}.partial-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  if (remote && await pullTools(remote, key, tmp, logger)) {
    const packages = await installedPackages(tmp);
    placeTree(tmp, root);
    rmSync(tmp, { recursive: true, force: true });
    writeFileAtomic(record, JSON.stringify({ suite: s.suite, mirror: s.mirror, inRelease: trust.inReleaseSha256, packages, treeDigest: treeDigest(root), created: new Date().toISOString(), remote: remote.location }, null, 2));
    return { root, key, suite: s.suite, cached: true, remote: true, trust, inReleaseFile, packages };
  }
  try {
    await exec('mmdebstrap', [
      '--mode=root', '--variant=apt', '--format=directory', `--include=${TOOLS_PACKAGES.join(',')}`,
      ...(locked ? [] : s.verify ? [`--keyring=${s.keyring}`] : ['--aptopt=Acquire::AllowInsecureRepositories "true"', '--aptopt=APT::Get::AllowUnauthenticated "true"']),
      '--aptopt=Acquire::Retries "3"', '--dpkgopt=path-exclude=/usr/share/doc/*', '--dpkgopt=path-exclude=/usr/share/man/*',
      // No fsync per unpacked file: a tree cut short is never used (it is placed and recorded only once
      // complete), and this tree is never part of an image. 42 -> 38 s and 48 -> 44 s measured here.
      '--dpkgopt=force-unsafe-io',
      // apt's lists and caches are not needed to run Ansible.
      '--customize-hook=rm -rf "$1/var/lib/apt/lists" "$1/var/cache/apt"',
      s.suite, tmp, locked ? locked.sourcesLine : `deb ${s.mirror} ${s.suite} main`,
    ], {
      logger, onStderrLine: onLine, env: { SOURCE_DATE_EPOCH: String(trust.archiveDate), LC_ALL: 'C.UTF-8' },
      hint: `mmdebstrap could not build the ${s.suite} tools tree (Ansible for the build): check source.debian.mirror and the network`,
    });
    const packages = await installedPackages(tmp);
    placeTree(tmp, root);
    // The tree's digest, taken where it now is (a rename changes the top directory's ctime).
    writeFileAtomic(record, JSON.stringify({ suite: s.suite, mirror: s.mirror, inRelease: trust.inReleaseSha256, packages, treeDigest: treeDigest(root), created: new Date().toISOString() }, null, 2));
    shareTools(remote, key, root, record, logger);
    return { root, key, suite: s.suite, cached: false, trust, inReleaseFile, packages };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Moves a finished tree from tmp to root, unless another build finished the same tree meanwhile (it may be using it): then theirs stays. */
function placeTree(tmp: string, root: string): void {
  if (existsSync(join(root, 'usr/bin/ansible-playbook'))) return;
  rmSync(root, { recursive: true, force: true });
  try {
    renameSync(tmp, root);
  } catch (e) {
    // Lost the race to a concurrent build between the check and the rename: theirs is the same tree.
    if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  }
}

/** The tools tree of key from the remote cache, unpacked into tmp; false (with a warning when it fails a check) otherwise. */
async function pullTools(remote: RemoteCache, key: string, tmp: string, logger: Logger): Promise<boolean> {
  const pulled = `${tmp}.pull`;
  try {
    const got = await remote.pull('tools', key, pulled);
    const tar = got?.files.find((f) => f.name === 'tools.tar');
    if (!tar) return false;
    // GNU tar keeps members inside tmp: it refuses names with "..", strips a leading "/", and
    // extracts a symbolic link that could lead outside as a placeholder until the end.
    await extractTree(tar.path, tmp, logger);
    if (!existsSync(join(tmp, 'usr/bin/ansible-playbook'))) throw new Error('it has no usr/bin/ansible-playbook');
    return true;
  } catch (e) {
    logger.warn(`the cache at ${remote.location} has tools tree ${key.slice(0, 12)}, but it cannot be used (${(e as Error).message}); building it`);
    rmSync(tmp, { recursive: true, force: true });
    return false;
  } finally {
    rmSync(pulled, { recursive: true, force: true });
  }
}

/** Queues the tools tree for the remote cache, as a tarball made when the queue reaches it. */
function shareTools(remote: RemoteCache | undefined, key: string, root: string, record: string, logger: Logger): void {
  if (!remote?.push) return;
  remote.enqueue('tools', key, async () => {
    const dir = join(remote.scratchDir, `tools-${key.slice(0, 16)}.${process.pid}.tmp`);
    mkdirSync(dir, { recursive: true });
    const tar = join(dir, 'tools.tar');
    await packTree(root, tar, logger);
    const meta = JSON.parse(readFileSync(record, 'utf8')) as Record<string, unknown>;
    return { meta, files: [{ name: 'tools.tar', path: tar, sha256: await sha256OfFile(tar), size: statSync(tar).size }], cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  });
}

/**
 * A cached tools tree that is already the pinned one: built from the same signed InRelease, with
 * exactly the pinned packages installed (so from the pinned .debs, whose sha256 that InRelease's
 * index gives). A locked build then needs neither the .debs nor a second mmdebstrap run.
 */
export function cachedToolsFor(cacheDir: string, suite: ToolsSuite, pins: { archive: { inRelease: string }; packages: { name: string; version: string; architecture: string }[] }, trust: ArchiveTrust, logger: Logger = silentLogger): ToolsTree | undefined {
  const dir = join(cacheDir, 'tools');
  const want = [...pins.packages].map((p) => `${p.name}:${p.architecture}=${p.version}`).sort().join('\n');
  for (const f of existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith('.json')) : []) {
    const key = f.slice(0, -'.json'.length);
    let rec: { suite?: string; inRelease?: string; packages?: InstalledPackage[] };
    try { rec = JSON.parse(readFileSync(join(dir, f), 'utf8')); } catch { continue; }
    if (rec.suite !== suite || rec.inRelease !== pins.archive.inRelease) continue;
    const have = (rec.packages ?? []).map((p) => `${p.name}:${p.arch}=${p.version}`).sort().join('\n');
    if (have !== want || !intactTree(dir, key, logger)) continue;
    return { root: join(dir, key), key, suite, cached: true, trust, packages: rec.packages! };
  }
  return undefined;
}

/** The version of ansible-core in a controller root (a tools tree, or "/" for the host). */
export function ansibleCoreVersion(packages: InstalledPackage[]): string | undefined {
  return packages.find((p) => p.name === 'ansible-core')?.version;
}

/** The Ansible controller a build runs in its sandbox: a tools tree, or the build host's /usr and /etc. */
export interface Controller {
  /** Root filesystem of the controller (read-only in the sandbox). */
  root: string;
  /** ansible-core's version there. */
  ansibleCore?: string;
  /** The tools tree, when the controller is one. */
  tools?: ToolsTree;
}

export async function hostController(): Promise<Controller> {
  const r = await exec('dpkg-query', ['-W', '-f', '${Version}', 'ansible-core'], { allowFailure: true });
  return { root: '/', ansibleCore: r.code === 0 ? r.stdout.trim() : undefined };
}

/** The controller kiln.yaml's provision.ansible names, building (or reusing) its tools tree. */
export async function controllerFor(c: KilnConfig, cacheDir: string, workDir: string, logger: Logger, onLine?: (l: string) => void, locked?: LockedTools, remote?: RemoteCache): Promise<Controller> {
  if (c.provision.ansible === 'host') return hostController();
  const d = c.source.debian;
  const tools = await toolsTree({ suite: c.provision.ansible, mirror: d.mirror, keyring: d.keyring, verify: d.verify, max_age: d.max_age }, cacheDir, workDir, logger, onLine, locked, remote);
  return { root: tools.root, ansibleCore: ansibleCoreVersion(tools.packages), tools };
}

export function describeController(c: Controller): string {
  const core = c.ansibleCore ? `ansible-core ${c.ansibleCore}` : 'Ansible';
  return c.tools ? `${core} from the ${c.tools.suite} tools tree (${c.tools.key.slice(0, 12)}${c.tools.remote ? ', from the shared cache' : c.tools.cached ? ', cached' : ''})` : `${core} of the build host`;
}
