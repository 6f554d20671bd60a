/**
 * Runs ansible-playbook with the jsonl callback and turns its events into live progress and
 * results. The outcome is decided from the stats event; a non-zero exit without stats is a tool
 * error (syntax error, missing file), reported with Ansible's own message.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';
import { playbookError } from './ansible.js';
import { PlaybookEventParser, totals, type HostStats, type PlaybookEvent, type TaskResult } from './results.js';

export interface PlaybookRun {
  playbook: string;
  /** Directory ansible-playbook runs in (the image repository, so its ansible.cfg and roles/ apply). */
  cwd: string;
  inventory: string;
  /** Scratch directory on the host for Ansible's local temp files and the vars file. */
  tmpDir: string;
  extraVars: Record<string, unknown>;
  check?: boolean;
  diff?: boolean;
  /** Prefix that runs ansible-playbook inside an environment (e.g. the private namespace for chroot builds). */
  wrap?: string[];
  env?: NodeJS.ProcessEnv;
  extraArgs?: string[];
  logger: Logger;
  onEvent?: (e: PlaybookEvent) => void;
}

export interface PlaybookOutcome {
  results: TaskResult[];
  stats: Record<string, HostStats>;
  totals: HostStats;
  code: number | null;
}

export async function runPlaybook(run: PlaybookRun): Promise<PlaybookOutcome> {
  const varsFile = join(run.tmpDir, 'kiln-vars.json');
  writeFileSync(varsFile, JSON.stringify(run.extraVars));
  const args = ['-i', run.inventory, '-e', `@${varsFile}`, ...(run.check ? ['--check'] : []), ...(run.diff ? ['--diff'] : []), ...(run.extraArgs ?? []), run.playbook];
  const parser = new PlaybookEventParser();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ANSIBLE_STDOUT_CALLBACK: 'ansible.posix.jsonl',
    ANSIBLE_JSON_INDENT: '0',
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_FORCE_COLOR: '0',
    ANSIBLE_RETRY_FILES_ENABLED: 'False',
    ANSIBLE_LOCAL_TEMP: join(run.tmpDir, 'ansible-local'),
    ANSIBLE_PIPELINING: 'True',
    ANSIBLE_HOST_KEY_CHECKING: 'False',
    ANSIBLE_DEPRECATION_WARNINGS: 'False',
    ANSIBLE_SYSTEM_WARNINGS: 'False',
    ANSIBLE_LOCALHOST_WARNING: 'False',
    ANSIBLE_PYTHON_INTERPRETER: 'auto_silent',
    ...run.env,
  };
  const [cmd, ...pre] = run.wrap && run.wrap.length ? run.wrap : ['ansible-playbook'];
  const fullArgs = run.wrap && run.wrap.length ? [...pre, 'ansible-playbook', ...args] : args;
  const r = await exec(cmd, fullArgs, {
    cwd: run.cwd, env, allowFailure: true, logger: run.logger,
    onStdoutLine: (line) => { const e = parser.push(line); if (e) run.onEvent?.(e); },
  });
  if (!parser.stats) {
    if (r.signal) throw new KilnError(`ansible-playbook was killed by ${r.signal}`);
    throw playbookError(run.playbook, [r.stderr, ...parser.otherLines].join('\n'));
  }
  const outcome: PlaybookOutcome = { results: parser.results, stats: parser.stats, totals: totals(parser.stats), code: r.code };
  return outcome;
}

/** The failed and unreachable results, formatted one per line: "task [host]: message". */
export function describeFailures(results: TaskResult[]): string[] {
  return results
    .filter((r) => r.status === 'failed' || r.status === 'unreachable')
    .map((r) => `${r.status === 'unreachable' ? 'unreachable' : 'failed'}: ${r.task} [${r.host}]${r.path ? ` (${r.path})` : ''}: ${(r.msg ?? r.stderr ?? '').split('\n')[0]}`);
}

/** One-line live status for a playbook event. */
export function eventStatus(e: PlaybookEvent): string | undefined {
  if (e.kind === 'task-start') return `TASK ${e.name}`;
  if (e.kind === 'result' && e.result) return `${e.result.status.padEnd(9)} ${e.result.task}`;
  return undefined;
}
