/**
 * The build sandbox: the only place code from the image or the repository runs (the playbook and
 * Ansible itself, the image's maintainer scripts, the repository's plugins and ansible.cfg).
 *
 * - A user namespace whose root is an unprivileged uid on the host (SANDBOX_UID_BASE + 0..65535).
 *   Idmapped mounts give the image tree its real owners inside; the host's files, /proc/sys and /sys
 *   stay the host root's, which the sandbox's root is not.
 * - Its own mount, PID, network, UTS, IPC and cgroup namespaces. Mounts made while assembling it
 *   are locked (see scripts.ts); /dev is a minimal private one; the host's filesystem is not there
 *   at all, only the controller's root (a tools tree, or the host's /usr and /etc) read-only, the
 *   image tree, and what a build binds in.
 * - Network: none but loopback, or outbound only through slirp4netns (a user-mode TCP/IP stack:
 *   the host's interfaces, routes and firewall are not touched, and its loopback is not reachable).
 * - One sandbox lives for a whole step, so what a first playbook run did to it (a mount, a
 *   hostname, a firewall rule, a sysctl) is still there for the second run.
 * - Every process in it dies when it is stopped or when Kiln dies, kill -9 included: the holders
 *   have a parent-death signal and the PID namespace takes everything else with its pid 1.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, type ExecOptions, type ExecResult } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';
import { IDMAP_PY, PHASE_A, PHASE_B } from './scripts.js';
import { specText, type SpecLine } from './layout.js';
import { PORTS_DIR, RELAY_PY, serveHostPorts, type HostPorts } from './ports.js';

/** uid and gid 0 inside the sandbox are this id on the host (the last 64K block of systemd's container range). */
export const SANDBOX_UID_BASE = 1879003136;
export const SANDBOX_ID_COUNT = 65536;

export interface SandboxOptions {
  /** Host scratch directory for this sandbox's spec and scripts (inside the build's work area). */
  dir: string;
  /** What the sandbox is made of, in order (src/sandbox/layout.ts). */
  layout: SpecLine[];
  network: 'none' | 'outbound';
  /** TCP ports of the host's loopback the sandbox may reach, as 127.0.0.1:PORT inside (ports.ts). */
  hostPorts?: number[];
  hostname: string;
  logger?: Logger;
}

export interface SandboxExecOptions extends Omit<ExecOptions, 'env' | 'cwd' | 'passEnv' | 'interactive'> {
  /** Working directory inside the sandbox. */
  cwd?: string;
  /** The command's whole environment (see sandboxEnv): nothing else reaches it. */
  env: Record<string, string>;
  interactive?: boolean;
}

const READY_TIMEOUT_MS = 60_000;

export class Sandbox {
  private stopped = false;
  private constructor(
    /** pid 1 of the sandbox, as the host sees it. */
    readonly pid: number,
    private readonly helpers: Helper[],
    readonly network: 'none' | 'outbound',
    private readonly ports?: HostPorts,
  ) {}

  static async start(o: SandboxOptions): Promise<Sandbox> {
    const logger = o.logger ?? silentLogger;
    mkdirSync(o.dir, { recursive: true });
    const ports = o.hostPorts?.length ? await serveHostPorts(o.hostPorts) : undefined;
    const layout: SpecLine[] = [...o.layout, ...(ports ? [{ kind: 'bind' as const, mode: 'ro' as const, src: ports.dir, dst: PORTS_DIR }] : [])];
    const spec = join(o.dir, 'spec');
    writeFileSync(spec, specText(layout));
    const staging = join(o.dir, 'root');
    mkdirSync(staging, { recursive: true });
    const helpers: Helper[] = [];
    const help = (what: string, cmd: string[], o: HelperOptions = {}): Helper => {
      const h = startHelper(what, cmd, { ...o, logger });
      helpers.push(h);
      return h;
    };
    try {
      // 1. The user namespace, held open by a process that lives as long as Kiln does.
      const holder = help('the user namespace', ['setpriv', '--pdeathsig', 'KILL', '--', 'unshare', '--user', '--', 'setpriv', '--pdeathsig', 'KILL', '--', 'sh', '-c', 'echo ready; exec sleep infinity']);
      await holder.ready;
      writeFileSync(`/proc/${holder.pid}/uid_map`, `0 ${SANDBOX_UID_BASE} ${SANDBOX_ID_COUNT}\n`);
      writeFileSync(`/proc/${holder.pid}/gid_map`, `0 ${SANDBOX_UID_BASE} ${SANDBOX_ID_COUNT}\n`);
      // 2. The filesystem, then every other namespace; its pid 1 says "ready <pid on the host>".
      const box = help('the sandbox', ['setpriv', '--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'private', '--',
        'sh', '-c', PHASE_A, 'kiln-sandbox', String(holder.pid), String(SANDBOX_UID_BASE), spec, staging], {
        env: { KILN_PHASE_B: PHASE_B, KILN_IDMAP: IDMAP_PY, KILN_HOSTNAME: o.hostname }, ready: /^ready (\d+)$/,
      });
      const pid = Number(/^ready (\d+)$/.exec(await box.ready)![1]);
      // 3. Outbound network through a user-mode stack, when asked for. fd 3 stays open until stop()
      // (slirp4netns exits when it closes, also when Kiln dies); on fd 4 it says it is ready.
      if (o.network === 'outbound') {
        await help('the network (slirp4netns)', ['setpriv', '--pdeathsig', 'KILL', '--', 'slirp4netns', '--configure', '--mtu=65520',
          '--disable-host-loopback', '--enable-sandbox', '--enable-seccomp', '--exit-fd=3', '--ready-fd=4', String(pid), 'tap0'], { readyFd: 4 }).ready;
      }
      const sandbox = new Sandbox(pid, helpers, o.network, ports);
      if (ports) {
        await help('the host port relay', sandbox.enter(['python3', '-c', RELAY_PY, PORTS_DIR, ...o.hostPorts!.map(String)], '/', { PATH: '/usr/bin:/bin' })).ready;
      }
      return sandbox;
    } catch (e) {
      await stopHelpers(helpers);
      await ports?.close();
      throw e;
    }
  }

  /** The nsenter prefix that runs a command inside (argv, for exec or for a user to copy). */
  enter(cmd: string[], cwd = '/', env: Record<string, string> = {}): string[] {
    return ['nsenter', `--target=${this.pid}`, '--user', '--mount', '--pid', '--net', '--uts', '--ipc', '--cgroup', '--root', `--wdns=${cwd}`,
      '--', '/usr/bin/env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...cmd];
  }

  /** Runs a command inside; its environment is exactly `env`. */
  async exec(cmd: string[], o: SandboxExecOptions): Promise<ExecResult> {
    if (this.stopped) throw new Error('sandbox already stopped');
    const [c, ...args] = this.enter(cmd, o.cwd, o.env);
    const { cwd: _cwd, env: _env, ...rest } = o;
    return exec(c, args, { ...rest, env: {}, passEnv: o.interactive ? ['TERM'] : [] });
  }

  /** Ends every process in the sandbox; the kernel then drops its mounts and namespaces. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // pid 1 first: its parent (the sandbox helper) reaps it and exits; then the holder and the network.
    kill(this.pid);
    const box = this.helpers[1];
    await Promise.race([box?.done, new Promise((r) => setTimeout(r, 5000))]);
    await stopHelpers(this.helpers);
    await this.ports?.close();
  }
}

function kill(pid: number | undefined): void {
  if (!pid) return;
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
}

interface HelperOptions { env?: Record<string, string>; ready?: RegExp; readyFd?: number; logger?: Logger }

/** A long-lived host process the sandbox needs, and the moment it said it was ready. */
interface Helper { pid?: number; ready: Promise<string>; done: Promise<ExecResult> }

/**
 * Starts a helper; `ready` resolves with the first stdout line matching `o.ready` (default "ready"),
 * or the first data on fd `o.readyFd`. A helper that exits before that is an error with its stderr.
 */
function startHelper(what: string, cmd: string[], o: HelperOptions): Helper {
  let resolveReady: (line: string) => void = () => {};
  const test = o.ready ?? /^ready$/;
  const h: Helper = { ready: new Promise<string>((res) => { resolveReady = res; }), done: undefined as unknown as Promise<ExecResult> };
  h.done = exec(cmd[0], cmd.slice(1), {
    logger: o.logger, allowFailure: true, env: o.env, extraFds: o.readyFd ? o.readyFd - 2 : 0,
    onStdoutLine: (l) => { if (!o.readyFd && test.test(l)) resolveReady(l); },
    onSpawn: (c) => {
      h.pid = c.pid;
      if (o.readyFd) c.stdio[o.readyFd]?.on('data', () => resolveReady('ready'));
    },
  });
  const exited = h.done.then((r): never => {
    throw new KilnError(`cannot start ${what}: ${r.stderr.trim().split('\n').slice(-3).join('; ') || `exit status ${r.code}`}`, {
      detail: r.stderr || undefined,
      hint: 'the build sandbox needs user namespaces, idmapped mounts (Linux 5.12+), util-linux, iproute2, python3 and slirp4netns (`kiln doctor`)',
    });
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new KilnError(`${what} did not start within ${READY_TIMEOUT_MS / 1000}s`)), READY_TIMEOUT_MS); });
  h.ready = Promise.race([h.ready, exited, timeout]).finally(() => clearTimeout(timer));
  h.ready.catch(() => { /* observed by the caller */ });
  return h;
}

async function stopHelpers(helpers: Helper[]): Promise<void> {
  for (const h of helpers) kill(h.pid);
  await Promise.allSettled(helpers.map((h) => h.done));
}
