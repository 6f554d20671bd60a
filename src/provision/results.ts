/**
 * Reads the ansible.posix.jsonl event stream: one JSON object per line, written as tasks start and
 * finish. Pure, so it is tested against recorded events.
 */
export type TaskStatus = 'ok' | 'changed' | 'failed' | 'skipped' | 'unreachable';

export interface TaskResult {
  play: string;
  task: string;
  host: string;
  action: string;
  status: TaskStatus;
  /** Where the task is defined (file:line), as Ansible reports it. */
  path?: string;
  msg?: string;
  /** stderr of command/shell tasks, when failed. */
  stderr?: string;
  diff?: unknown;
  /** base64 file content returned by slurp (used by `kiln apply`'s preflight). */
  content?: string;
  /** The URL a uri task requested, its templates filled in (kiln apply's health check). */
  url?: string;
  /** Warnings the module returned (e.g. a service action a chroot ignored). */
  warnings?: string[];
  /** For service modules: the unit and the state asked for. */
  service?: { name: string; state?: string };
}

const SERVICE_ACTIONS = /(^|\.)(service|systemd|systemd_service|sysvinit)$/;

/** A service action a build cannot take (nothing runs while an image is built): it happens at first boot. */
export interface DeferredAction { service: string; action: 'start' | 'restart' | 'reload'; task: string; path?: string }

/** The start/restart/reload requests of service tasks and handlers, which the image carries out at boot. */
export function deferredServiceActions(results: readonly TaskResult[]): DeferredAction[] {
  const verbs: Record<string, DeferredAction['action']> = { started: 'start', restarted: 'restart', reloaded: 'reload' };
  return results.flatMap((r) => {
    const action = r.service?.state ? verbs[r.service.state] : undefined;
    if (!r.service || !action || (r.status !== 'ok' && r.status !== 'changed')) return [];
    return [{ service: r.service.name, action, task: r.task, ...(r.path ? { path: r.path } : {}) }];
  });
}

export interface HostStats { ok: number; changed: number; failures: number; unreachable: number; skipped: number; rescued: number; ignored: number }

export interface PlaybookEvent { kind: 'play' | 'task-start' | 'result' | 'stats'; name?: string; result?: TaskResult; stats?: Record<string, HostStats> }

interface RawEvent {
  _event?: string;
  play?: { name?: string };
  task?: { name?: string; path?: string };
  hosts?: Record<string, Record<string, unknown>>;
  stats?: Record<string, HostStats>;
}

export class PlaybookEventParser {
  private play = '';
  readonly results: TaskResult[] = [];
  stats?: Record<string, HostStats>;
  /** Lines that were not JSON (warnings, deprecations): kept for error messages. */
  readonly otherLines: string[] = [];

  /** mapPath turns a task path as Ansible reports it into the one the user knows (the build runs in a sandbox). */
  constructor(private readonly mapPath: (p: string) => string = (p) => p) {}

  /** Feeds one stdout line; returns the event it carried, if any. */
  push(line: string): PlaybookEvent | undefined {
    const t = line.trim();
    if (!t.startsWith('{')) {
      if (t) this.otherLines.push(t);
      return undefined;
    }
    let ev: RawEvent;
    try {
      ev = JSON.parse(t) as RawEvent;
    } catch {
      this.otherLines.push(t);
      return undefined;
    }
    switch (ev._event) {
      case 'v2_playbook_on_play_start':
        this.play = ev.play?.name ?? '';
        return { kind: 'play', name: this.play };
      case 'v2_runner_on_start':
      case 'v2_playbook_on_task_start':
      case 'v2_playbook_on_handler_task_start':
        return { kind: 'task-start', name: ev.task?.name ?? '' };
      case 'v2_runner_on_ok':
      case 'v2_runner_on_failed':
      case 'v2_runner_on_skipped':
      case 'v2_runner_on_unreachable': {
        const [host, r] = Object.entries(ev.hosts ?? {})[0] ?? ['?', {}];
        const result: TaskResult = {
          play: this.play,
          task: ev.task?.name ?? '',
          host,
          action: String(r.action ?? ''),
          status: statusOf(ev._event, r),
          path: ev.task?.path ? this.mapPath(ev.task.path) : undefined,
        };
        const msg = r.msg ?? (Array.isArray(r.results) ? (r.results as { msg?: string }[]).find((x) => x.msg)?.msg : undefined);
        if (typeof msg === 'string' && msg) result.msg = msg;
        if (typeof r.stderr === 'string' && r.stderr) result.stderr = r.stderr;
        if (r.diff !== undefined) result.diff = r.diff;
        if (typeof r.content === 'string') result.content = r.content;
        if (typeof r.url === 'string') result.url = r.url;
        if (Array.isArray(r.warnings) && r.warnings.length) result.warnings = r.warnings.map(String);
        if (SERVICE_ACTIONS.test(result.action)) {
          const args = ((r.invocation as { module_args?: Record<string, unknown> } | undefined)?.module_args ?? {});
          const name = args.name ?? r.name;
          const state = args.state ?? r.state;
          if (typeof name === 'string') result.service = { name, ...(typeof state === 'string' ? { state } : {}) };
        }
        if (r.ignore_errors === true && result.status === 'failed') result.status = 'ok';
        this.results.push(result);
        return { kind: 'result', result };
      }
      case 'v2_playbook_on_stats':
        this.stats = ev.stats;
        return { kind: 'stats', stats: ev.stats };
      default:
        return undefined;
    }
  }
}

function statusOf(event: string, r: Record<string, unknown>): TaskStatus {
  if (event === 'v2_runner_on_unreachable') return 'unreachable';
  if (event === 'v2_runner_on_failed') return 'failed';
  if (event === 'v2_runner_on_skipped' || r.skipped === true) return 'skipped';
  return r.changed === true ? 'changed' : 'ok';
}

/**
 * The failures that stopped a host: its last failed or unreachable result. Earlier ones were
 * ignore_errors or rescued (the jsonl events do not say which), and the stats count only these.
 */
export function fatalFailures(results: readonly TaskResult[], stats: Record<string, HostStats>): TaskResult[] {
  return Object.entries(stats).filter(([, s]) => s.failures || s.unreachable).flatMap(([host]) => {
    const last = results.filter((r) => r.host === host && (r.status === 'failed' || r.status === 'unreachable')).at(-1);
    return last ? [last] : [];
  });
}

export function totals(stats: Record<string, HostStats> | undefined): HostStats {
  const t: HostStats = { ok: 0, changed: 0, failures: 0, unreachable: 0, skipped: 0, rescued: 0, ignored: 0 };
  for (const s of Object.values(stats ?? {})) for (const k of Object.keys(t) as (keyof HostStats)[]) t[k] += s[k] ?? 0;
  return t;
}
