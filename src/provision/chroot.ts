/**
 * Provisioning at build time: ansible-playbook runs inside the build sandbox (src/sandbox/) and
 * applies the playbook to the image tree over the chroot connection. One sandbox serves the whole
 * step (apt-get update, both playbook runs), so what the first run did to it is still there for the
 * idempotence run. The controller, the repository's plugins and every module run in there: nothing
 * a task does reaches the build host, and nothing of the host's environment reaches a task.
 */
import { chmodSync, copyFileSync, constants, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { output, type ExecResult } from '../exec.js';
import type { Logger } from '../log.js';
import type { KilnConfig } from '../template/schema.js';
import { sandboxEnv } from '../sandbox/env.js';
import { FACADE_PYTHON, writeFacade } from '../sandbox/facade.js';
import { Sandbox } from '../sandbox/index.js';
import { controllerLayout, IMAGE, IMAGE_KILN, imageLayout, KILN_RUN, prepareMountPoints, treePath, type SpecLine } from '../sandbox/layout.js';
import { existsInTree, removeInTree, statInTree } from '../image/tree.js';
import { ANSIBLE_ENV, describeFailures, playbookError, runPlaybook, type PlaybookOutcome } from './run.js';
import { fatalFailures, type PlaybookEvent, type TaskResult } from './results.js';

/** Inside the image: Ansible's remote temp dir, removed after provisioning (and caught by the seal if not). */
export const REMOTE_TMP = '/var/tmp/.kiln-ansible';
/** Inside the sandbox: a copy of the repository's files (read-only) and Kiln's inventory and vars. */
export const REPO = '/repo';
const IO = '/kiln';
/** slirp4netns's DNS forwarder, as the sandbox sees it. */
const SANDBOX_DNS = '10.0.2.3';

/** The environment that makes what runs in the tree independent of the build host and time. */
export function chrootEnvironment(o: { sourceDateEpoch?: number }): Record<string, string> {
  return {
    DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C.UTF-8', TZ: 'UTC',
    // Modules imported by Ansible must not leave new .pyc files (their bytes are not reproducible).
    PYTHONDONTWRITEBYTECODE: '1',
    ...(o.sourceDateEpoch !== undefined ? { SOURCE_DATE_EPOCH: String(o.sourceDateEpoch) } : {}),
  };
}

/** A locked build's apt: only the local repository of the locked .debs, served as files. */
export interface LockedApt {
  /** Directory holding the repository's Packages and Release. */
  repoDir: string;
  /** Directory holding the locked .debs (named <sha256>.deb, as Packages says). */
  debsDir: string;
}

export interface ProvisionSandboxOptions {
  /** The image tree on the host. */
  tree: string;
  /** The build's work area (the sandbox's scratch lives in it). */
  workDir: string;
  cacheDir: string;
  /** The Ansible controller's root filesystem: a tools tree, or "/" for the host's own Ansible. */
  controller: string;
  /** The repository (git top level) and the files of it the build uses (tracked, plus untracked in a snapshot). */
  repo: { root: string; files: string[] };
  /** Files the sandbox must never see even if they are in the repository (signing keys). */
  exclude?: string[];
  network: 'none' | 'outbound';
  /** Host loopback ports the build may reach (provision.host_ports). */
  hostPorts?: number[];
  hostname: string;
  sourceDateEpoch?: number;
  locked?: LockedApt;
  /**
   * The sources line apt uses in the sandbox when it is not the image's own: `[trusted=yes]` when
   * source.debian.verify is false. Bound over the image's sources.list, so it never stays in the image.
   */
  buildSourcesLine?: string;
  logger: Logger;
  /** Use the repository copy already in the work area (`kiln shell` reopening a kept build). */
  reuseRepoCopy?: boolean;
}

/** What `kiln shell` needs to open the same sandbox again on a kept work area. */
type SavedOptions = Omit<ProvisionSandboxOptions, 'logger' | 'reuseRepoCopy'>;
const SAVED = 'sandbox.json';

/** The `deb` line of a locked build's repository as apt in the image sees it. */
export const LOCKED_SOURCES_LINE = `deb [trusted=yes] file:${KILN_RUN}/locked-repo ./`;

/** The sandbox a build provisions in, with the image at /image and the repository at /repo. */
export class ProvisionSandbox {
  private constructor(
    readonly sandbox: Sandbox,
    private readonly o: ProvisionSandboxOptions,
    private readonly ioDir: string,
  ) {}

  static async open(o: ProvisionSandboxOptions): Promise<ProvisionSandbox> {
    for (const need of ['bin/sh', 'usr/bin/python3', 'bin/dd']) {
      if (!existsInTree(o.tree, `/${need}`)) throw new KilnError(`the image tree has no /${need}; Ansible's chroot connection needs it`, { hint: 'add the package providing it to source.debian.packages' });
    }
    const dir = join(o.workDir, 'sandbox');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const facade = join(dir, 'facade');
    writeFacade(facade);
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    let resolvConf: string | undefined;
    if (o.network === 'outbound') {
      resolvConf = join(dir, 'resolv.conf');
      writeFileSync(resolvConf, `# kiln build sandbox (slirp4netns)\nnameserver ${SANDBOX_DNS}\n`);
    }
    const repoCopy = join(o.workDir, 'repo');
    if (!o.reuseRepoCopy) copyRepository(o.repo.root, o.repo.files, repoCopy, o.exclude ?? []);
    const { logger: _l, reuseRepoCopy: _r, ...saved } = o;
    writeFileSync(join(o.workDir, SAVED), JSON.stringify(saved satisfies SavedOptions, null, 2));
    const ioDir = join(o.workDir, 'ansible-io');
    mkdirSync(ioDir, { recursive: true });
    // Services must not start: invoke-rc.d asks policy-rc.d, 101 = action forbidden.
    const policy = join(treePath(o.tree, 'usr/sbin', 'dir', 'Kiln writes policy-rc.d there'), 'policy-rc.d');
    if (lstatSafe(policy)?.isSymbolicLink()) rmSync(policy);
    writeFileSync(policy, '#!/bin/sh\n# kiln: no services start while the image is built\nexit 101\n');
    chmodSync(policy, 0o755);

    const binds: SpecLine[] = [];
    if (o.locked) {
      const apt = join(dir, 'locked-apt');
      mkdirSync(join(apt, 'sources.list.d'), { recursive: true });
      for (const d of ['lists/partial', 'archives/partial']) mkdirSync(join(apt, d), { recursive: true });
      writeFileSync(join(apt, 'sources.list'), `${LOCKED_SOURCES_LINE}\n`);
      binds.push(
        { kind: 'bind', mode: 'ro', src: join(apt, 'sources.list'), dst: `${IMAGE}/etc/apt/sources.list` },
        { kind: 'bind', mode: 'ro', src: join(apt, 'sources.list.d'), dst: `${IMAGE}/etc/apt/sources.list.d` },
        { kind: 'bind', mode: 'rw', src: join(apt, 'lists'), dst: `${IMAGE}/var/lib/apt/lists` },
        { kind: 'bind', mode: 'rw', src: join(apt, 'archives'), dst: `${IMAGE}/var/cache/apt/archives` },
        { kind: 'bind', mode: 'ro', src: o.locked.repoDir, dst: `${IMAGE_KILN}/locked-repo` },
        { kind: 'bind', mode: 'ro', src: o.locked.debsDir, dst: `${IMAGE_KILN}/locked-repo/debs` },
      );
    } else {
      const archives = join(o.cacheDir, 'apt-archives');
      const lists = join(o.cacheDir, 'apt-lists');
      for (const d of [archives, lists]) mkdirSync(join(d, 'partial'), { recursive: true });
      binds.push(
        { kind: 'bind', mode: 'rw', src: archives, dst: `${IMAGE}/var/cache/apt/archives` },
        { kind: 'bind', mode: 'rw', src: lists, dst: `${IMAGE}/var/lib/apt/lists` },
      );
      if (o.buildSourcesLine) {
        const sources = join(dir, 'build-sources.list');
        writeFileSync(sources, `${o.buildSourcesLine}\n`);
        binds.push({ kind: 'bind', mode: 'ro', src: sources, dst: `${IMAGE}/etc/apt/sources.list` });
      }
    }
    if (resolvConf && statInTree(o.tree, '/etc/resolv.conf')?.isFile()) {
      binds.push({ kind: 'bind', mode: 'ro', src: resolvConf, dst: `${IMAGE}/etc/resolv.conf` });
    }
    const image = imageLayout({ tree: o.tree, facade, emptyFile: empty, resolvConf, binds });
    prepareMountPoints(o.tree, image);
    const layout: SpecLine[] = [
      ...controllerLayout(o.controller),
      { kind: 'bind', mode: 'ro', src: repoCopy, dst: REPO },
      { kind: 'bind', mode: 'ro', src: ioDir, dst: IO },
      ...image,
    ];
    const sandbox = await Sandbox.start({ dir, layout, network: o.network, hostPorts: o.hostPorts, hostname: o.hostname, logger: o.logger });
    return new ProvisionSandbox(sandbox, o, ioDir);
  }

  /** Opens the sandbox of a build kept by --on-error=keep again (its work area's saved options). */
  static async reopen(workDir: string, logger: Logger): Promise<ProvisionSandbox> {
    const file = join(workDir, SAVED);
    if (!existsSync(file)) throw new KilnError(`${workDir} is not the work area of a build that reached provisioning (no ${SAVED})`, { hint: 'use the path `kiln build --on-error=keep` printed', exitCode: 2 });
    const saved = JSON.parse(readFileSync(file, 'utf8')) as SavedOptions;
    return ProvisionSandbox.open({ ...saved, logger, reuseRepoCopy: true });
  }

  /** An interactive shell (or a command) in the image, inside the sandbox; returns its exit status. */
  async shell(cmd: string[] = ['/bin/bash', '-l']): Promise<number> {
    const r = await this.sandbox.exec(['chroot', IMAGE, ...cmd], { env: { ...this.imageEnv, TERM: process.env.TERM ?? 'dumb' }, interactive: true, allowFailure: true, logger: this.o.logger });
    return r.code ?? 1;
  }

  /** The environment of every command in the tree (apt, Ansible and the tools its modules run). */
  private get imageEnv(): Record<string, string> {
    return sandboxEnv(chrootEnvironment(this.o));
  }

  /** Runs a command in the image (chroot), inside the sandbox. */
  runInImage(cmd: string[]): Promise<ExecResult> {
    return this.sandbox.exec(['chroot', IMAGE, ...cmd], { env: this.imageEnv, logger: this.o.logger });
  }

  /** Where a host path of the repository is inside the sandbox. */
  inside(hostPath: string): string {
    const rel = relative(this.o.repo.root, hostPath);
    if (rel.startsWith('..')) throw new KilnError(`${hostPath}: expected a path inside the repository ${this.o.repo.root}, which is all the build sandbox sees`, { where: { file: hostPath }, hint: 'keep kiln.yaml, the playbook and its files in the git repository' });
    return rel ? `${REPO}/${rel}` : REPO;
  }

  /** Where a sandbox path of the repository is on the host (for error messages and task paths). */
  outside(p: string): string {
    return p === REPO || p.startsWith(`${REPO}/`) ? join(this.o.repo.root, p.slice(REPO.length)) : p;
  }

  /** ansible-playbook over the chroot connection; a failed task is a KilnError naming it, its file and line. */
  async provision(o: { playbook: string; cwd: string; extraVars: Record<string, unknown>; onEvent?: (e: PlaybookEvent) => void }): Promise<PlaybookOutcome> {
    const inventory = join(this.ioDir, 'inventory.ini');
    writeFileSync(inventory, [
      '[kiln_image]',
      `image ansible_host=${IMAGE} ansible_connection=community.general.chroot ansible_python_interpreter=${FACADE_PYTHON} ansible_remote_tmp=${REMOTE_TMP}`,
      '',
    ].join('\n'));
    const outcome = await runPlaybook({
      playbook: this.inside(o.playbook), cwd: this.inside(o.cwd), inventory: `${IO}/inventory.ini`,
      varsFile: { host: join(this.ioDir, 'kiln-vars.json'), inside: `${IO}/kiln-vars.json` },
      tmpDir: '/tmp', extraVars: o.extraVars, logger: this.o.logger, onEvent: o.onEvent,
      env: ANSIBLE_BUILD_ENV,
      run: (args, env, x) => this.sandbox.exec(['ansible-playbook', ...args], { ...x, cwd: this.inside(o.cwd), env: sandboxEnv({ ...chrootEnvironment(this.o), ...env }) }),
      mapPath: (p) => this.outside(p),
    });
    if (outcome.totals.failures > 0 || outcome.totals.unreachable > 0) {
      const fatal = fatalFailures(outcome.results, outcome.stats);
      const first = fatal[0];
      const failures = describeFailures(fatal);
      throw new KilnError(`task failed: ${first?.task ?? '?'}: ${(first?.msg ?? first?.stderr ?? 'see the details').split('\n')[0]}`, {
        where: first?.path ? parsePath(first.path) : { file: o.playbook },
        detail: failures.join('\n'),
        hint: failureHint(first),
      });
    }
    return outcome;
  }

  /** ansible-playbook --syntax-check with the build's own Ansible (a newer role may need a newer one). */
  async syntaxCheck(playbook: string, cwd: string): Promise<void> {
    await sandboxedSyntaxCheck(this.sandbox, this.inside(playbook), this.inside(cwd), (p) => this.outside(p));
  }

  /** Ends the sandbox (the tree stays as the playbook left it: `releaseTree` tidies it for the image). */
  stop(): Promise<void> {
    return this.sandbox.stop();
  }
}

/** Ansible's settings for a build: machine-readable output, no retry files, pipelining. */
const ANSIBLE_BUILD_ENV: Record<string, string> = {
  ANSIBLE_LOCAL_TEMP: '/tmp/ansible-local',
  ANSIBLE_PIPELINING: 'True',
};

/** The syntax check, in a sandbox that holds the repository at /repo. */
export async function sandboxedSyntaxCheck(box: Sandbox, playbook: string, cwd: string, mapPath: (p: string) => string): Promise<void> {
  const r = await box.exec(['ansible-playbook', '--syntax-check', '-i', 'localhost,', playbook], {
    cwd, allowFailure: true, env: sandboxEnv({ ...ANSIBLE_ENV, ANSIBLE_STDOUT_CALLBACK: 'default', ANSIBLE_LOCAL_TEMP: '/tmp/ansible-local' }),
  });
  if (r.code === 0) return;
  throw playbookError(mapPath(playbook), r.stderr || r.stdout, mapPath);
}

/** Removes what the provisioning sandbox put in the tree. */
export function releaseTree(root: string): void {
  // The playbook may have made /usr or /var/tmp a link to anywhere: removals resolve inside the tree.
  removeInTree(root, '/usr/sbin/policy-rc.d');
  removeInTree(root, REMOTE_TMP);
}

/** What to say about a failed task: a controller task that tried to write is the sandbox at work. */
export function failureHint(first: TaskResult | undefined): string {
  const text = `${first?.msg ?? ''}\n${first?.stderr ?? ''}`;
  if (/Read-only file system|not writable/.test(text)) {
    return 'tasks on the controller (delegate_to: localhost, local_action, connection: local, hosts: localhost) run in Kiln\'s build sandbox, whose root is read-only: they cannot change the build host. Target the image instead, or run such a task outside the build';
  }
  return 'fix the task and build again; `--on-error=keep` keeps the tree and prints a shell command to look inside it';
}

function parsePath(p: string): { file: string; line?: number } {
  const m = /^(.*):(\d+)$/.exec(p);
  return m ? { file: m[1], line: Number(m[2]) } : { file: p };
}

function lstatSafe(p: string) {
  try { return lstatSync(p); } catch { return undefined; }
}

/** The files of the repository a build uses: those git tracks, and untracked ones it does not ignore (snapshots). */
export async function repositoryFiles(repoRoot: string): Promise<string[]> {
  const out = await output('git', ['-C', repoRoot, 'ls-files', '-z', '--cached', '--others', '--exclude-standard']);
  return [...new Set(out.split('\0').filter(Boolean))];
}

/** Signing keys kiln.yaml or the environment name: never copied into the sandbox, even when committed. */
export function signingKeyFiles(c: KilnConfig, dir: string): string[] {
  return [process.env.KILN_SIGNING_KEY, c.release.sign?.ssh_key, c.release.sign?.pgp_key].filter((f): f is string => Boolean(f)).map((f) => resolve(dir, f));
}

/**
 * Copies the repository's files (the ones git knows, so no .kiln, build output or untracked
 * secrets) into the work area for the sandbox, leaving out `exclude`d files (the signing keys).
 */
export function copyRepository(root: string, files: string[], to: string, exclude: string[]): void {
  rmSync(to, { recursive: true, force: true });
  mkdirSync(to, { recursive: true });
  const skip = new Set(exclude.map((f) => relative(root, f)));
  for (const f of files) {
    if (skip.has(f) || f.split('/').includes('..')) continue;
    const src = join(root, f);
    const st = lstatSafe(src);
    if (!st) continue;
    const dst = join(to, f);
    mkdirSync(dirname(dst), { recursive: true });
    // Links stay links: relative ones inside the repository work in the sandbox, others point nowhere there.
    if (st.isSymbolicLink()) symlinkSync(readlinkSync(src), dst);
    else if (st.isFile()) {
      copyFileSync(src, dst, constants.COPYFILE_FICLONE);
      chmodSync(dst, st.mode & 0o7777);
    }
  }
}
