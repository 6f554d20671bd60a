import type { RemoteCache } from './remote-cache.js';
import type { LoadedTemplate } from '../template/load.js';
import type { Logger } from '../log.js';
import type { BuildVersion } from '../version/git.js';
import type { ArchiveTrust, InstalledPackage } from '../source/debian.js';
import type { SourceRecord } from '../source/record.js';
import type { Controller } from '../sandbox/tools.js';
import type { DeferredAction, HostStats, TaskResult } from '../provision/results.js';
import type { LockedSet, LockFile } from '../lock/file.js';
import type { LockedRepo } from '../lock/repo.js';
import type { Artifact } from '../formats/index.js';
import type { Finding } from '../audit/finding.js';
import type { DiskLayout } from '../disk/index.js';
import type { SealReport } from '../seal/types.js';
import { stepsOver, type DeclaredStep } from './plan.js';
import type { CacheKeys } from './cache-keys.js';
import type { CacheHit, StepCache } from './step-cache.js';
import type { FormatName } from '../formats/registry.js';
import type { Drivers, ProvisionBox } from './drivers.js';
import type { ReleaseStore } from '../store/release-store.js';
import type { StagedBlob } from '../store/backend.js';
import type { Signer, TrustedKey } from '../store/signing.js';

export interface BuildOptions {
  snapshot: boolean;
  onError: 'cleanup' | 'keep';
  /** Where finished artifacts go; default .kiln/out/<name>-<version>. Other files there are left alone (src/pipeline/outputs.ts). */
  outDir?: string;
  /** Skip releasing to the store even for a release build. */
  noRelease?: boolean;
  /** 'ignore': resolve packages from the mirror even when kiln.lock exists (`kiln lock`). Default 'use'. */
  lock?: 'use' | 'ignore';
  /** Cache directory; default KILN_CACHE_DIR, else .kiln/cache beside kiln.yaml. */
  cacheDir?: string;
  /** --no-cache: the step cache is neither read nor written (the base and tools trees still are). */
  noCache?: boolean;
  /**
   * When the version is released already: 'fail' (the default) refuses before building; 'verify'
   * builds and compares with the release, a success only when the artifacts are the same (a CI job
   * that ran again, or two runners racing for one version).
   */
  ifReleased?: 'fail' | 'verify';
  /** A shared step cache in a registry (oci://host[:port]/prefix): looked up after the local one, written after it. */
  remoteCache?: string;
  /** Signs the entries this build pushes to the remote cache (--cache-sign-key). */
  remoteCacheSigner?: Signer;
  /** Keys whose signature makes a remote cache entry usable (--cache-trust-key); none: any entry the registry has is. */
  remoteCacheTrust?: TrustedKey[];
}

export interface ProvisionRecord {
  /** The Ansible that ran (ansible-core version and where it came from). */
  controller?: string;
  tasks: TaskResult[];
  totals: HostStats;
  /** Service starts, restarts and reloads the playbook asked for: nothing runs at build time, the image does them at boot. */
  deferred?: DeferredAction[];
  idempotence?: { mode: 'fail' | 'warn' | 'off'; changed: string[]; totals?: HostStats };
}

/** What every step of a build gets: the template, the options and the build's directories. */
export interface BuildEnv {
  template: LoadedTemplate;
  options: BuildOptions;
  logger: Logger;
  /** .kiln beside kiln.yaml */
  kilnDir: string;
  cacheDir: string;
  /** The step cache shared through a registry (--cache, KILN_CACHE_REMOTE); absent with --no-cache. */
  remoteCache?: RemoteCache;
  /** Scratch for this build: removed on success and on failure (unless --on-error=keep). */
  workDir: string;
  /** The image's root tree inside workDir. */
  root: string;
  /** Artifacts are written here, then moved to outDir when every step has passed. */
  stagingDir: string;
  buildId: string;
  startedAt: number;
  /** The steps finished so far, with their times (the release records them; `kiln report` charts them). */
  stepTimes: { name: string; durationMs: number }[];
  /**
   * The host tools the lock, source, tools, provision and disk steps run (src/pipeline/drivers.ts):
   * realDrivers in every build, a fake in their unit tests. Part of the environment, not of
   * BuildOptions: the options are what the user asked for, this is how the build reaches the host.
   * Required, not optional: newContext is the one place a context is made, so no step needs a fallback.
   */
  drivers: Drivers;
}

/**
 * What steps pass on. Each result is set by the step that declares it in `provides` (or
 * `mayProvide`), and read by steps that declare it in `needs` (then run() sees it as present) or
 * `uses` (src/pipeline/plan.ts).
 */
export interface BuildState {
  /** version: the git tag at HEAD, the commit, SOURCE_DATE_EPOCH. */
  version?: BuildVersion;
  /** lock: the locked set and its local repository, when kiln.lock is used. */
  lock?: LockState;
  /** source: what was verified of the archive. */
  trust?: ArchiveTrust;
  source?: SourceRecord;
  /** source: the verified base tree tarball (unpacked by configure when no cached output makes it unnecessary). */
  base?: { tar: string };
  /** configure: when the base tree was unpacked (ms); anything newer in the tree was written by the build. */
  treeSince?: number;
  /** cache: the step cache's keys for this build and what it already holds (src/pipeline/steps/cache.ts). */
  cache?: CachePlan;
  /** tools: the Ansible controller (tools tree or host) the sandbox runs. */
  controller?: Controller;
  /** provision: the sandbox while it runs (kept on --on-error=keep until the shell command is printed). */
  sandbox?: ProvisionBox;
  provision?: ProvisionRecord;
  /** stamp: the packages the finished tree holds. */
  packages?: InstalledPackage[];
  seal?: SealReport;
  /** disk: the raw GPT disk in the work area and its layout. */
  disk?: { raw: string; layout: DiskLayout };
  findings?: Finding[];
  /** formats: every artifact, in the staging directory until the outputs step moves them. */
  artifacts?: Artifact[];
  /**
   * formats, in a release build to a local store: each artifact's copy in the store's scratch, made
   * while the other formats were written; the release step moves them into place instead of copying.
   */
  staged?: { store: ReleaseStore; blobs: Map<string, StagedBlob> };
  /** identical: the version was released already with the same artifacts (--if-released verify, or a runner that released it first). */
  release?: { store: string; ref: string; digest: string; identical?: boolean };
  /** outputs: where the artifacts are now. */
  outDir?: string;
}

export type BuildContext = BuildEnv & BuildState;

/** A step of a build, declared with what it reads, needs and provides. */
export type BuildStep = DeclaredStep<BuildContext, BuildState>;

/** Declares a build step (src/pipeline/plan.ts); its run() sees its needs as present. */
export const step = stepsOver<BuildEnv, BuildState>();

/** What the lock step found and serves, for the steps that install packages. */
export interface LockState {
  file: string;
  sha256: string;
  lock: LockFile;
  /**
   * The image's locked archive package set, served as the only repository, and what the chain check
   * of it found (verifyLockedSet), not what the lock's text says. Absent when kiln.lock pins an
   * upstream image or release instead (the source step checks that pin).
   */
  archive?: { set: LockedSet; repo: LockedRepo; trust: ArchiveTrust };
  /** The same for the tools tree's pins. */
  toolsTrust?: ArchiveTrust;
}

/** What a cached tree carries besides the tree: the records of the steps that made it. */
export interface TreeData { provision: ProvisionRecord; seal: SealReport }
/** What a cached disk carries: the layout, the stamped tree's packages, and the tree's records. */
export interface DiskData extends TreeData { layout: DiskLayout; packages: InstalledPackage[] }
export interface FormatData { size: number; sha256: string }

/**
 * The step cache for one build: the keys of its cacheable outputs and the entries found for them.
 * The deepest hit decides what is built: a disk hit needs no tree at all, a tree hit no base tree,
 * no provisioning and no seal.
 */
export interface CachePlan {
  store: StepCache;
  keys: CacheKeys;
  tree?: CacheHit<TreeData>;
  disk?: CacheHit<DiskData>;
  audit?: CacheHit<null>;
  formats: Map<FormatName, CacheHit<FormatData>>;
}
