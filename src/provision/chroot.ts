/**
 * Provisioning at build time: ansible-playbook over the chroot connection, inside a private mount
 * and PID namespace. The kernel drops every mount (proc, sys, dev, run, apt caches) and kills every
 * process started in the tree (a daemon a postinst started despite policy-rc.d) when the namespace's
 * last process exits: also on failure, Ctrl-C, and kill -9 of Kiln itself. The host is untouched.
 */
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';
import { describeFailures, runPlaybook, type PlaybookOutcome } from './run.js';
import type { PlaybookEvent } from './results.js';

/** Inside the image: Ansible's remote temp dir, removed after provisioning (and caught by the seal if not). */
export const REMOTE_TMP = '/var/tmp/.kiln-ansible';

const ENTER_SCRIPT = `#!/bin/sh
# kiln: set up the chroot's mounts inside a private namespace, then run the command.
set -eu
root=$1; archives=$2; lists=$3; shift 3
[ "$1" = "--" ] && shift
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mkdir -p "$root/run/systemd/resolve" "$root/run/lock"
cat /etc/resolv.conf > "$root/run/systemd/resolve/stub-resolv.conf"
cp "$root/run/systemd/resolve/stub-resolv.conf" "$root/run/systemd/resolve/resolv.conf"
if [ ! -L "$root/etc/resolv.conf" ]; then
  [ -e "$root/etc/resolv.conf" ] || : > "$root/etc/resolv.conf"
  mount --bind "$root/run/systemd/resolve/stub-resolv.conf" "$root/etc/resolv.conf"
fi
if [ -n "\${KILN_LOCKED_APT:-}" ]; then
  # A locked build: apt sees only the local repository of the locked .debs, with its own lists and
  # download dir (the .debs are cached already; concurrent builds do not share apt's lock).
  lists="$KILN_LOCKED_APT/lists"
  archives="$KILN_LOCKED_APT/archives"
  [ -e "$root/etc/apt/sources.list" ] || : > "$root/etc/apt/sources.list"
  mount --bind "$KILN_LOCKED_APT/sources.list" "$root/etc/apt/sources.list"
  mount --bind "$KILN_LOCKED_APT/sources.list.d" "$root/etc/apt/sources.list.d"
fi
mkdir -p "$archives/partial" "$lists/partial"
mount --bind "$archives" "$root/var/cache/apt/archives"
mount --bind "$lists" "$root/var/lib/apt/lists"
exec "$@"
`;

export interface ChrootEnv {
  root: string;
  /** The command prefix that runs a command with the chroot's mounts in a private namespace. */
  wrap: string[];
  /** Environment of every command in the tree (apt, Ansible and the tools its modules run). */
  env: Record<string, string>;
}

export interface ChrootOptions {
  /**
   * Exported as SOURCE_DATE_EPOCH: tools that write dates into files (useradd's shadow lastchg,
   * dpkg, initramfs-tools, ...) write this one instead of the day of the build.
   */
  sourceDateEpoch?: number;
  /** `deb ...` line of a locked build's local repository: apt in the tree sees only it. */
  lockedSourcesLine?: string;
}

/** The environment that makes what runs in the tree independent of the build host and time. */
export function chrootEnvironment(o: ChrootOptions): Record<string, string> {
  return {
    DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C.UTF-8', TZ: 'UTC',
    // Modules imported by Ansible must not leave new .pyc files (their bytes are not reproducible).
    PYTHONDONTWRITEBYTECODE: '1',
    ...(o.sourceDateEpoch !== undefined ? { SOURCE_DATE_EPOCH: String(o.sourceDateEpoch) } : {}),
  };
}

export function prepareChroot(root: string, workDir: string, cacheDir: string, opts: ChrootOptions = {}): ChrootEnv {
  for (const need of ['bin/sh', 'usr/bin/python3', 'bin/dd']) {
    if (!existsSync(join(root, need))) throw new KilnError(`the image tree has no /${need}; Ansible's chroot connection needs it`, { hint: 'add the package providing it to source.debian.packages' });
  }
  const script = join(workDir, 'kiln-enter-chroot.sh');
  writeFileSync(script, ENTER_SCRIPT, { mode: 0o755 });
  const archives = join(cacheDir, 'apt-archives');
  const lists = join(cacheDir, 'apt-lists');
  mkdirSync(archives, { recursive: true });
  mkdirSync(lists, { recursive: true });
  // Services must not start on the build host: invoke-rc.d asks policy-rc.d, 101 = action forbidden.
  const policy = join(root, 'usr/sbin/policy-rc.d');
  writeFileSync(policy, '#!/bin/sh\n# kiln: no services start while the image is built\nexit 101\n');
  chmodSync(policy, 0o755);
  const env = chrootEnvironment(opts);
  if (opts.lockedSourcesLine) {
    const dir = join(workDir, 'locked-apt');
    mkdirSync(join(dir, 'sources.list.d'), { recursive: true });
    mkdirSync(join(dir, 'lists', 'partial'), { recursive: true });
    mkdirSync(join(dir, 'archives', 'partial'), { recursive: true });
    writeFileSync(join(dir, 'sources.list'), `${opts.lockedSourcesLine}\n`);
    env.KILN_LOCKED_APT = dir;
  }
  return {
    root, env,
    wrap: ['unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--', 'sh', script, root, archives, lists, '--'],
  };
}

/** Removes what prepareChroot put in the tree. */
export function releaseChroot(root: string): void {
  rmSync(join(root, 'usr/sbin/policy-rc.d'), { force: true });
  rmSync(join(root, REMOTE_TMP.slice(1)), { recursive: true, force: true });
}

export async function chrootRun(env: ChrootEnv, cmd: string[], logger: Logger): Promise<void> {
  const [c, ...a] = env.wrap;
  await exec(c, [...a, 'chroot', env.root, ...cmd], { logger, env: { ...process.env, ...env.env } });
}

export interface ProvisionOptions {
  env: ChrootEnv;
  playbook: string;
  cwd: string;
  tmpDir: string;
  extraVars: Record<string, unknown>;
  logger: Logger;
  onEvent?: (e: PlaybookEvent) => void;
}

export async function provisionChroot(o: ProvisionOptions): Promise<PlaybookOutcome> {
  const inventory = join(o.tmpDir, 'inventory.ini');
  writeFileSync(inventory, [
    '[kiln_image]',
    `image ansible_host=${o.env.root} ansible_connection=community.general.chroot ansible_python_interpreter=/usr/bin/python3 ansible_remote_tmp=${REMOTE_TMP}`,
    '',
  ].join('\n'));
  const outcome = await runPlaybook({
    playbook: o.playbook, cwd: o.cwd, inventory, tmpDir: o.tmpDir, extraVars: o.extraVars, wrap: o.env.wrap,
    env: o.env.env, logger: o.logger, onEvent: o.onEvent,
  });
  const failures = describeFailures(outcome.results);
  if (outcome.totals.failures > 0 || outcome.totals.unreachable > 0 || failures.length) {
    const first = outcome.results.find((r) => r.status === 'failed' || r.status === 'unreachable');
    throw new KilnError(`task failed: ${first?.task ?? '?'}: ${(first?.msg ?? first?.stderr ?? 'see the details').split('\n')[0]}`, {
      where: first?.path ? parsePath(first.path) : { file: o.playbook },
      detail: failures.join('\n'),
      hint: 'fix the task and build again; `--on-error=keep` keeps the tree and prints a shell command to look inside it',
    });
  }
  return outcome;
}

function parsePath(p: string): { file: string; line?: number } {
  const m = /^(.*):(\d+)$/.exec(p);
  return m ? { file: m[1], line: Number(m[2]) } : { file: p };
}
