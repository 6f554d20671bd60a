/**
 * The health check `kiln apply` runs after each batch of a rollout (kiln.yaml `apply.health`, read from
 * the release's own commit): an HTTP request with the status (and optionally a body) expected, and/or a
 * command on the host; each retried every `interval` until it passes or `timeout` is spent. It runs as
 * an Ansible play Kiln writes, so it reaches hosts exactly as the release's playbook did (the same
 * inventory, user, key and host-key checks) and its url, body and command are templated per host
 * (inventory variables, `kiln_image_version`). The play is JSON (which is YAML): nothing in the config is
 * spliced into YAML text. Pure, so the play and the reading of its results are unit-tested.
 */
import { KilnError } from '../errors.js';
import type { TaskResult } from '../provision/results.js';
import { firstLine } from './text.js';

/** apply.health in kiln.yaml. */
export interface HealthConfig {
  http?: {
    url: string;
    /** The status (or statuses) that pass; default 200. */
    status: number | number[];
    /** A regular expression (Python's) the response body must match. */
    body?: string;
    /** host: the request is made on the host itself (http://127.0.0.1/ is the host); controller: from the machine running kiln. */
    from: 'host' | 'controller';
    validate_certs: boolean;
  };
  /** A shell command run on the host (as root): exit status 0 is healthy. */
  command?: string;
  timeout: string;
  interval: string;
}

export const HTTP_TASK = 'kiln health: HTTP';
export const COMMAND_TASK = 'kiln health: command';

/** "90s" or "2m" as seconds. */
export function seconds(spec: string, what: string): number {
  const m = /^([0-9]+)([sm])$/.exec(spec);
  if (!m) throw new KilnError(`${what}: ${JSON.stringify(spec)} is not a duration (expected e.g. 30s or 2m)`, { exitCode: 2 });
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
}

/** How the check is shown to the user: `GET http://127.0.0.1/ -> 200, body ~ /ok/; command: systemctl is-active nginx`. */
export function describeHealth(h: HealthConfig): string {
  const parts: string[] = [];
  if (h.http) {
    const st = [h.http.status].flat().join('|');
    parts.push(`GET ${h.http.url} -> ${st}${h.http.body ? `, body ~ /${h.http.body}/` : ''}${h.http.from === 'controller' ? ' (from this machine)' : ''}`);
  }
  if (h.command) parts.push(`command: ${h.command}`);
  return `${parts.join('; ')} (within ${h.timeout}, every ${h.interval})`;
}

/** The play that checks every host it is limited to. Each check is one task, retried until it passes. */
export function healthPlaybook(h: HealthConfig): string {
  if (!h.http && !h.command) throw new KilnError('apply.health needs http, command, or both', { exitCode: 2 });
  const timeout = seconds(h.timeout, 'apply.health.timeout');
  const interval = Math.max(1, seconds(h.interval, 'apply.health.interval'));
  // ansible-core 2.14 makes `retries` attempts in all (later versions one more); at least one.
  const retry = { retries: Math.max(1, Math.ceil(timeout / interval)), delay: interval };
  const tasks: Record<string, unknown>[] = [];
  if (h.http) {
    tasks.push({
      name: HTTP_TASK,
      'ansible.builtin.uri': {
        url: h.http.url,
        status_code: [h.http.status].flat(),
        // One request may take at most the interval (and never more than the whole timeout).
        timeout: Math.max(1, Math.min(interval, timeout, 30)),
        follow_redirects: 'none',
        validate_certs: h.http.validate_certs,
        return_content: h.http.body !== undefined,
      },
      register: 'kiln_health_http',
      until: h.http.body !== undefined ? 'kiln_health_http is succeeded and (kiln_health_http.content is search(kiln_health_body))' : 'kiln_health_http is succeeded',
      ...retry,
      // From the machine running kiln (Ansible's implicit localhost: a local connection, its own Python): the
      // request only, without privilege; the uri module writes no file here.
      ...(h.http.from === 'controller' ? { delegate_to: 'localhost', become: false } : {}),
      ...(h.http.body !== undefined ? { vars: { kiln_health_body: h.http.body } } : {}),
    });
  }
  if (h.command) {
    tasks.push({ name: COMMAND_TASK, 'ansible.builtin.shell': h.command, register: 'kiln_health_command', until: 'kiln_health_command is succeeded', changed_when: false, ...retry });
  }
  return JSON.stringify([{ name: 'kiln health check', hosts: 'all', gather_facts: false, become: true, tasks }], null, 2) + '\n';
}

/**
 * Each checked host's verdict: undefined when healthy, else why not. A host with no result for a
 * check (the play never reached it) is unhealthy too: a check that did not run did not pass.
 */
export function healthVerdicts(h: HealthConfig, hosts: string[], results: TaskResult[]): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  const tasks = [...(h.http ? [HTTP_TASK] : []), ...(h.command ? [COMMAND_TASK] : [])];
  for (const host of hosts) {
    let why: string | undefined;
    for (const task of tasks) {
      const r = results.find((x) => x.host === host && x.task === task);
      if (!r) why ??= `${task === HTTP_TASK ? 'HTTP check' : 'command'} did not run`;
      else if (r.status === 'unreachable') why ??= `unreachable: ${firstLine(r.msg)}`;
      else if (r.status === 'failed') why ??= task === HTTP_TASK ? httpWhy(h, r) : `command failed: ${firstLine(r.stderr) || firstLine(r.msg)}`;
    }
    out.set(host, why);
  }
  return out;
}

function httpWhy(h: HealthConfig, r: TaskResult): string {
  const msg = firstLine(r.msg);
  // The uri module succeeded (its message is "OK (n bytes)") and only the body test failed.
  // The URL as requested (the uri module returns it with its templates filled in), else as written.
  const url = r.url ?? h.http?.url;
  if (/^OK\b/.test(msg) && h.http?.body !== undefined) return `GET ${url}: the response does not match /${h.http.body}/`;
  return `GET ${url}: ${msg || 'failed'}`;
}

