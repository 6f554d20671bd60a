/**
 * Kiln's one error policy, applied by reportError (the CLI) and kept by everything between a throw
 * and it (the step runner, the disk assembly, the Terraform mode of `kiln resolve`):
 *
 * - User errors are KilnError: something in the user's input, files, environment or a host tool's
 *   result that they can act on. The message says what was expected and what was found, where (file:line,
 *   step, command) and, in the hint, what to do next. Exit status 1, or the error's exitCode
 *   (2 for a command line Kiln cannot use).
 * - Bugs are any other Error (or a thrown non-Error): an internal invariant broke. They are shown with
 *   their stack, as a bug to report, and exit 70 (EX_SOFTWARE). Nothing may wrap a bug into a
 *   KilnError, which would hide its stack and blame the user.
 * - Interrupts are InterruptedError: 130 for SIGINT, 143 for SIGTERM, as a shell reports them.
 * - The host refusing an operation for a reason of its own (no space left, a quota, permissions, a
 *   read-only filesystem, too many open files, an I/O error, no memory) is the user's to act on
 *   wherever it happens: hostError makes it a KilnError naming the operation and the path. Other
 *   system errors (ENOENT, EEXIST, …) stay bugs: they mean Kiln lost track of its own files.
 */
export const BUG_EXIT = 70;

export interface ErrorWhere {
  file?: string;
  line?: number;
  column?: number;
  step?: string;
  command?: string;
}

export class KilnError extends Error {
  readonly where: ErrorWhere;
  readonly hint?: string;
  readonly detail?: string;
  readonly exitCode: number;

  constructor(message: string, opts: { where?: ErrorWhere; hint?: string; detail?: string; exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'KilnError';
    this.where = opts.where ?? {};
    this.hint = opts.hint;
    this.detail = opts.detail;
    this.exitCode = opts.exitCode ?? 1;
  }

  /** "file:line:column: message" when the error has a location, as editors and compilers print it. */
  format(): string {
    const w = this.where;
    let loc = '';
    if (w.file) loc = w.file + (w.line ? `:${w.line}` + (w.column ? `:${w.column}` : '') : '') + ': ';
    const lines = [`${loc}${this.message}`];
    if (w.step) lines.push(`  step: ${w.step}`);
    if (w.command) lines.push(`  command: ${w.command}`);
    if (this.detail) lines.push(...this.detail.trimEnd().split('\n').map((l) => `  | ${l}`));
    if (this.hint) lines.push(`  hint: ${this.hint}`);
    return lines.join('\n');
  }
}

/** Raised by exec() when a host tool exits non-zero; carries the tail of its stderr. */
export class CommandError extends KilnError {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
  readonly stdout: string;
  constructor(cmd: string, code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string, hint?: string) {
    const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
    super(`${cmd.split(' ')[0]} ${how}`, { where: { command: cmd }, detail: tail(stderr || stdout, 30), hint });
    this.name = 'CommandError';
    this.code = code;
    this.signal = signal;
    this.stderr = stderr;
    this.stdout = stdout;
  }
}

/** Raised when the user interrupts a build (SIGINT/SIGTERM). */
export class InterruptedError extends KilnError {
  constructor(signal: string) {
    super(`interrupted by ${signal}`, { exitCode: signal === 'SIGINT' ? 130 : 143 });
    this.name = 'InterruptedError';
  }
}

export function tail(text: string, lines: number): string {
  const all = text.trimEnd().split('\n');
  return all.slice(Math.max(0, all.length - lines)).join('\n');
}

/**
 * Writes an error the way the policy above says and returns the exit status: a KilnError as
 * "error: file:line: message" with its hint; anything else as a bug with its stack.
 */
/** errno codes that describe the build host's state, not Kiln's code. */
const HOST_ERRNO: Record<string, string> = {
  ENOSPC: 'free some space (or point KILN_CACHE_DIR / --out elsewhere) and run it again',
  EDQUOT: 'a disk quota is exhausted: free some space and run it again',
  EACCES: 'check the permissions of that path (Kiln runs as the user who started it)',
  EPERM: 'the operation is not permitted here: check the permissions, or run as root where Kiln needs it',
  EROFS: 'that filesystem is mounted read-only',
  EMFILE: 'too many open files: raise the limit (ulimit -n) and run it again',
  ENFILE: 'the system is out of file handles: close other programs and run it again',
  EIO: 'the device reported an I/O error: check the disk',
  ENOMEM: 'the host is out of memory',
};

/** The KilnError for an error the host raised for a reason of its own (see the policy above); undefined for anything else. */
export function hostError(e: unknown, where: ErrorWhere = {}): KilnError | undefined {
  if (e instanceof KilnError || !(e instanceof Error)) return undefined;
  const x = e as NodeJS.ErrnoException;
  const hint = typeof x.code === 'string' && typeof x.syscall === 'string' ? HOST_ERRNO[x.code] : undefined;
  if (!hint) return undefined;
  return new KilnError(`the host refused ${x.syscall}${x.path ? ` on ${x.path}` : ''}: ${x.message}`, { where: { ...(x.path ? { file: x.path } : {}), ...where }, hint, cause: e });
}

export function reportError(e: unknown, write: (text: string) => void, prefix = 'error: '): number {
  const host = hostError(e);
  if (host) e = host;
  if (e instanceof KilnError) {
    write(`${prefix}${e.format()}\n`);
    return e.exitCode;
  }
  write(`kiln: internal error (a bug; please report it)\n${e instanceof Error ? e.stack ?? `${e.name}: ${e.message}` : String(e)}\n`);
  return BUG_EXIT;
}
