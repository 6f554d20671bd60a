/**
 * The one way Kiln runs a host tool. It logs the command line (shown with --verbose), captures
 * or streams output, and turns a non-zero exit into a CommandError carrying the tool's stderr.
 * Children run in their own process group so an interrupted build can stop the whole tree, and
 * with a parent-death signal (setpriv --pdeathsig KILL): if Kiln itself is killed, even with
 * kill -9, the tool dies with it instead of writing on into a work area nobody owns any more.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { CommandError, KilnError } from './errors.js';
import { silentLogger, type Logger } from './log.js';
import { hostEnv } from './sandbox/env.js';

export interface ExecOptions {
  cwd?: string;
  /**
   * Variables for this command, on top of the minimal host environment (`hostEnv`). Kiln's own
   * environment is never passed on as a whole: see src/sandbox/env.ts.
   */
  env?: Record<string, string | undefined>;
  /** Further variables of Kiln's environment this command needs (e.g. SSH_AUTH_SOCK). */
  passEnv?: readonly string[];
  /** Called once the child exists (to learn its pid). */
  onSpawn?: (child: ChildProcess) => void;
  /** Extra pipes: the child's fd 3, 4, ... (readable/writable streams on the returned child). */
  extraFds?: number;
  /** Data written to the child's stdin, then closed. */
  input?: string | Buffer;
  /** Called with each complete line of stdout as it arrives (output is still captured). */
  onStdoutLine?: (line: string) => void;
  /** Called with each complete line of stderr as it arrives. */
  onStderrLine?: (line: string) => void;
  /** Return the result instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  /** Hint shown when the command fails. */
  hint?: string;
  logger?: Logger;
  /** Inherit stdio (interactive shells). */
  interactive?: boolean;
  /** Kill the child (and its group) after this many milliseconds. */
  timeoutMs?: number;
  /** Keep at most this many bytes of each stream (the tail). Default 4 MiB. */
  maxCapture?: number;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const running = new Set<ChildProcess>();

/** Signals every running child's process group; used by the interrupt handler. */
export function killAllChildren(signal: NodeJS.Signals = 'SIGTERM'): void {
  for (const child of running) {
    if (child.pid === undefined) continue;
    try { process.kill(-child.pid, signal); } catch { /* already gone */ }
  }
}

export function runningChildren(): number {
  return running.size;
}

/**
 * One word for a POSIX shell, and for the shell-like splitters Kiln hands strings to (Python's
 * shlex in ANSIBLE_SSH_ARGS, Perl's shellwords in mmdebstrap's special hooks). The only quoting
 * helper: where a string must be split by someone else, each value in it goes through this.
 */
export function quoteArg(a: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(quoteArg).join(' ');
}

/** The executable a command name runs: cmd itself when it holds a slash, else the first on PATH. */
export function findTool(cmd: string, path: string): string | undefined {
  if (cmd.includes('/')) return cmd;
  for (const dir of path.split(':').filter(Boolean)) {
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch { /* not here */ }
  }
  return undefined;
}

export function exec(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const logger = opts.logger ?? silentLogger;
  const line = commandLine(cmd, args);
  logger.debug(line);
  const env = hostEnv(opts.env, opts.passEnv);
  const tool = findTool(cmd, env.PATH ?? '');
  if (!tool) {
    return Promise.reject(new KilnError(`host tool not found: ${cmd}`, { where: { command: line }, hint: 'run `kiln doctor` (as root) to install the missing host tools' }));
  }
  // setpriv execs the tool in place: the child's pid, process group and exit status are the tool's.
  const setpriv = findTool('setpriv', env.PATH ?? '');
  const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', tool, ...args]] : [tool, [...args]];
  const spawnOpts: SpawnOptions = {
    cwd: opts.cwd,
    env,
    detached: !opts.interactive,
    stdio: opts.interactive ? 'inherit' : ['pipe', 'pipe', 'pipe', ...Array<'pipe'>(opts.extraFds ?? 0).fill('pipe')],
  };
  const max = opts.maxCapture ?? 4 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(file, argv, spawnOpts);
    } catch (e) {
      reject(new KilnError(`cannot run ${cmd}: ${(e as Error).message}`, { where: { command: line }, hint: 'run `kiln doctor` to install missing host tools' }));
      return;
    }
    running.add(child);
    opts.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    const lineSplitter = (cb?: (l: string) => void) => {
      let buf = '';
      return {
        push(chunk: string) {
          if (!cb) return;
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) { cb(buf.slice(0, i)); buf = buf.slice(i + 1); }
        },
        flush() { if (cb && buf) cb(buf); buf = ''; },
      };
    };
    const outLines = lineSplitter(opts.onStdoutLine);
    const errLines = lineSplitter(opts.onStderrLine);
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => { stdout += d; if (stdout.length > max) stdout = stdout.slice(-max); outLines.push(d); });
    child.stderr?.on('data', (d: string) => { stderr += d; if (stderr.length > max) stderr = stderr.slice(-max); errLines.push(d); });
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => { try { process.kill(-(child.pid ?? 0), 'SIGKILL'); } catch { /* gone */ } }, opts.timeoutMs);
    }
    child.on('error', (e: NodeJS.ErrnoException) => {
      running.delete(child);
      if (timer) clearTimeout(timer);
      const missing = e.code === 'ENOENT';
      reject(new KilnError(missing ? `host tool not found: ${cmd}` : `cannot run ${cmd}: ${e.message}`, {
        where: { command: line },
        hint: missing ? 'run `kiln doctor` (as root) to install the missing host tools' : undefined,
      }));
    });
    child.on('close', (code, signal) => {
      running.delete(child);
      if (timer) clearTimeout(timer);
      outLines.flush();
      errLines.flush();
      const result = { code, signal, stdout, stderr };
      if (code === 0 || opts.allowFailure) resolve(result);
      else reject(new CommandError(line, code, signal, stdout, stderr, opts.hint));
    });
    if (child.stdin) {
      child.stdin.on('error', () => { /* child closed stdin early; its exit status tells the story */ });
      if (opts.input !== undefined) child.stdin.end(opts.input);
      else child.stdin.end();
    }
  });
}

/** Run and return trimmed stdout. */
export async function output(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<string> {
  return (await exec(cmd, args, opts)).stdout.trim();
}

/** True when the command is an executable on PATH. */
export async function hasTool(name: string, path = process.env.PATH ?? ''): Promise<boolean> {
  return findTool(name, path) !== undefined;
}
