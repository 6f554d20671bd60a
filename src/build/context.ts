import type { LoadedTemplate } from '../template/load.js';
import type { Logger } from '../log.js';
import type { BuildVersion } from '../version/git.js';
import type { ArchiveTrust, InstalledPackage, SourceRecord } from '../source/debian.js';
import type { ProvisionSandbox } from '../provision/chroot.js';
import type { Controller } from '../sandbox/tools.js';
import type { DeferredAction, HostStats, TaskResult } from '../provision/results.js';
import type { LockFile } from '../lock/file.js';
import type { LockedRepo } from '../lock/repo.js';
import type { Artifact } from '../formats/index.js';

export interface BuildOptions {
  snapshot: boolean;
  onError: 'cleanup' | 'keep';
  /** Where finished artifacts go; default .kiln/out/<name>-<version>. Other files there are left alone (src/build/outputs.ts). */
  outDir?: string;
  /** Skip releasing to the store even for a release build. */
  noRelease?: boolean;
  /** 'ignore': resolve packages from the mirror even when kiln.lock exists (`kiln lock`). Default 'use'. */
  lock?: 'use' | 'ignore';
  /** Cache directory; default KILN_CACHE_DIR, else .kiln/cache beside kiln.yaml. */
  cacheDir?: string;
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

/** Everything one build knows; each step reads what earlier steps wrote. */
export interface BuildContext {
  template: LoadedTemplate;
  options: BuildOptions;
  logger: Logger;
  /** .kiln beside kiln.yaml */
  kilnDir: string;
  cacheDir: string;
  /** Scratch for this build: removed on success and on failure (unless --on-error=keep). */
  workDir: string;
  /** The image's root tree inside workDir. */
  root: string;
  /** Artifacts are written here, then moved to outDir when every step has passed. */
  stagingDir: string;
  outDir?: string;
  buildId: string;
  startedAt: number;
  version?: BuildVersion;
  trust?: ArchiveTrust;
  /** Set when kiln.lock is used: the locked set and its local repository. */
  lock?: LockState;
  source?: SourceRecord;
  /** The Ansible controller (tools tree or host) the sandbox runs. */
  controller?: Controller;
  /** The provisioning sandbox while the provision step runs (kept on --on-error=keep until the shell command is printed). */
  sandbox?: ProvisionSandbox;
  provision?: ProvisionRecord;
  packages?: InstalledPackage[];
  sealReport?: unknown;
  raw?: string;
  diskLayout?: unknown;
  findings?: { check: string; path: string; message: string }[];
  artifacts: Artifact[];
  release?: { store: string; ref: string; digest: string };
}

/** What the lock step found and serves, for the steps that install packages. */
export interface LockState {
  file: string;
  sha256: string;
  lock: LockFile;
  repo: LockedRepo;
  /** What the chain check of the image's set found (verifyLockedSet), not what the lock's text says. */
  trust: ArchiveTrust;
  /** The same for the tools tree's pins. */
  toolsTrust?: ArchiveTrust;
}
