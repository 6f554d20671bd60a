/**
 * Runs ansible-playbook with the jsonl callback and turns its events into live progress and
 * results. The outcome is decided from the stats event; a non-zero exit without stats is a tool
 * error (syntax error, missing file), reported with Ansible's own message.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, type ExecOptions, type ExecResult } from '../exec.js';
import type { Logger } from '../log.js';
import { PlaybookEventParser, totals, type HostStats, type PlaybookEvent, type TaskResult } from './results.js';
import { yamlSyntaxProblems, type YamlProblem } from '../yaml-errors.js';

export interface PlaybookRun {
  playbook: string;
  /** Directory ansible-playbook runs in (the image repository, so its ansible.cfg and roles/ apply). */
  cwd: string;
  inventory: string;
  /** Scratch directory for Ansible's local temp files (as ansible-playbook sees it). */
  tmpDir: string;
  /** Where the extra-vars file is written (host path) and how ansible-playbook reaches it; default: tmpDir. */
  varsFile?: { host: string; inside: string };
  extraVars: Record<string, unknown>;
  check?: boolean;
  diff?: boolean;
  /**
   * Runs ansible-playbook with these arguments (the build runs it in its sandbox). Default: the
   * host's ansible-playbook in `cwd`, with the `env` below on top of the minimal host environment.
   */
  run?: (args: string[], env: Record<string, string>, opts: ExecOptions) => Promise<ExecResult>;
  /** Ansible settings on top of ANSIBLE_ENV. */
  env?: Record<string, string>;
  /** Variables of Kiln's environment the host's ansible-playbook needs (SSH_AUTH_SOCK for apply). */
  passEnv?: string[];
  extraArgs?: string[];
  /** Maps a path Ansible reports (a task's file) to the one the user knows. */
  mapPath?: (p: string) => string;
  logger: Logger;
  onEvent?: (e: PlaybookEvent) => void;
}

/** Ansible's output settings Kiln relies on: one JSON event per line, no colour, no retry files. */
export const ANSIBLE_ENV: Record<string, string> = {
  ANSIBLE_STDOUT_CALLBACK: 'ansible.posix.jsonl',
  ANSIBLE_JSON_INDENT: '0',
  ANSIBLE_NOCOLOR: '1',
  ANSIBLE_FORCE_COLOR: '0',
  ANSIBLE_RETRY_FILES_ENABLED: 'False',
  ANSIBLE_HOST_KEY_CHECKING: 'False',
  ANSIBLE_DEPRECATION_WARNINGS: 'False',
  ANSIBLE_SYSTEM_WARNINGS: 'False',
  ANSIBLE_LOCALHOST_WARNING: 'False',
  ANSIBLE_INVENTORY_UNPARSED_WARNING: 'False',
  ANSIBLE_PYTHON_INTERPRETER: 'auto_silent',
};

export interface PlaybookOutcome {
  results: TaskResult[];
  stats: Record<string, HostStats>;
  totals: HostStats;
  code: number | null;
}

export async function runPlaybook(run: PlaybookRun): Promise<PlaybookOutcome> {
  const vars = run.varsFile ?? { host: join(run.tmpDir, 'kiln-vars.json'), inside: join(run.tmpDir, 'kiln-vars.json') };
  writeFileSync(vars.host, JSON.stringify(run.extraVars));
  const args = ['-i', run.inventory, '-e', `@${vars.inside}`, ...(run.check ? ['--check'] : []), ...(run.diff ? ['--diff'] : []), ...(run.extraArgs ?? []), run.playbook];
  const parser = new PlaybookEventParser(run.mapPath);
  const env = { ...ANSIBLE_ENV, ANSIBLE_LOCAL_TEMP: join(run.tmpDir, 'ansible-local'), ANSIBLE_PIPELINING: 'True', ...run.env };
  const opts: ExecOptions = {
    allowFailure: true, logger: run.logger,
    onStdoutLine: (line) => { const e = parser.push(line); if (e) run.onEvent?.(e); },
  };
  const r = run.run
    ? await run.run(args, env, opts)
    : await exec('ansible-playbook', args, { ...opts, cwd: run.cwd, env, passEnv: run.passEnv });
  if (!parser.stats) {
    if (r.signal) throw new KilnError(`ansible-playbook was killed by ${r.signal}`);
    throw playbookError(run.playbook, [r.stderr, ...parser.otherLines].join('\n'), run.mapPath);
  }
  const outcome: PlaybookOutcome = { results: parser.results, stats: parser.stats, totals: totals(parser.stats), code: r.code };
  return outcome;
}

/**
 * The failed and unreachable results, one per line: "task [host]: message", then the command's stderr
 * (its last 10 lines) when the module gave both, such as a template's `validate` command that refused.
 */
export function describeFailures(results: TaskResult[]): string[] {
  return results
    .filter((r) => r.status === 'failed' || r.status === 'unreachable')
    .map((r) => {
      const line = `${r.status === 'unreachable' ? 'unreachable' : 'failed'}: ${r.task} [${r.host}]${r.path ? ` (${r.path})` : ''}: ${(r.msg ?? r.stderr ?? '').split('\n')[0]}`;
      const err = r.msg && r.stderr ? r.stderr.trimEnd().split('\n').slice(-10).map((l) => `  stderr: ${l}`) : [];
      return [line, ...err].join('\n');
    });
}

/** One-line live status for a playbook event. */
export function eventStatus(e: PlaybookEvent): string | undefined {
  if (e.kind === 'task-start') return `TASK ${e.name}`;
  if (e.kind === 'result' && e.result) return `${e.result.status.padEnd(9)} ${e.result.task}`;
  return undefined;
}

/**
 * Turns Ansible's error into a located KilnError: ansible-core 2.14's "ERROR! ... The error appears
 * to be in 'FILE': line N, column M", or 2.19's "[ERROR]: ...\nOrigin: FILE:N:M".
 */
export function playbookError(playbook: string, text: string, mapPath: (p: string) => string = (p) => p): KilnError {
  const old = /appears to be in '([^']+)': line (\d+), column (\d+)/.exec(text);
  const origin = /^Origin: (.+?):(\d+):(\d+)\s*$/m.exec(text);
  const m = old ?? origin;
  const first = (/ERROR! (.*)/.exec(text)?.[1] ?? /\[ERROR\]: (.*)/.exec(text)?.[1] ?? text.trim().split('\n')[0] ?? 'syntax error').trim();
  if (/the playbook: .* could not be found/.test(text)) {
    return new KilnError(`playbook not found: ${mapPath(playbook)}`, { where: { file: mapPath(playbook) } });
  }
  const file = m ? mapPath(m[1]) : undefined;
  // Ansible's YAML errors name where its parser gave up (for an unclosed bracket, the next line): the
  // file is read again to point at the token that opened the construct, Ansible's text kept as detail.
  const cause = file && /while loading YAML|YAML/.test(text) ? yamlCause(file) : undefined;
  if (file && cause) {
    return new KilnError(`playbook syntax error: ${cause.message.replace(/^invalid YAML: /, '')}`, {
      where: { file, line: cause.line, column: cause.column },
      detail: text.split('\n').filter((l) => l.trim() && !l.startsWith('[WARNING]')).slice(0, 20).join('\n'),
      exitCode: 2,
    });
  }
  return new KilnError(`playbook syntax error: ${first}`, {
    where: m ? { file: file!, line: Number(m[2]), column: Number(m[3]) } : { file: mapPath(playbook) },
    detail: text.split('\n').filter((l) => l.trim() && !l.startsWith('[WARNING]')).slice(0, 20).join('\n'),
    exitCode: 2,
  });
}

/** The first located syntax error of a YAML file of the repository, if it has one. */
function yamlCause(file: string): YamlProblem | undefined {
  if (!/\.ya?ml$/.test(file) || !existsSync(file)) return undefined;
  try {
    return yamlSyntaxProblems(readFileSync(file, 'utf8'))[0];
  } catch {
    // Only a refinement of Ansible's own location: an unreadable file keeps that one.
    return undefined;
  }
}
