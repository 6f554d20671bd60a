import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { PlaybookEventParser, totals } from '../../src/provision/results.js';
import { describeFailures } from '../../src/provision/run.js';

// Lines as ansible.posix.jsonl 1.5.4 writes them (trimmed to the fields Kiln reads).
const lines = [
  '[WARNING]: a warning that is not JSON',
  '{"_event":"v2_playbook_on_play_start","play":{"name":"web server","id":"1"}}',
  '{"_event":"v2_runner_on_start","task":{"name":"Install nginx","path":"/r/roles/web/tasks/main.yml:1"},"hosts":{}}',
  '{"_event":"v2_runner_on_ok","task":{"name":"Install nginx","path":"/r/roles/web/tasks/main.yml:1"},"hosts":{"image":{"action":"ansible.builtin.apt","changed":true}}}',
  '{"_event":"v2_runner_on_ok","task":{"name":"Enable","path":"/r/t.yml:9"},"hosts":{"image":{"action":"service","changed":false}}}',
  '{"_event":"v2_runner_on_skipped","task":{"name":"Reload"},"hosts":{"image":{"action":"service","skipped":true}}}',
  '{"_event":"v2_runner_on_failed","task":{"name":"Break","path":"/r/t.yml:20"},"hosts":{"image":{"action":"command","failed":true,"msg":"non-zero return code","stderr":"boom"}}}',
  '{"_event":"v2_runner_on_failed","task":{"name":"Tolerated"},"hosts":{"image":{"action":"command","failed":true,"ignore_errors":true,"msg":"x"}}}',
  '{"_event":"v2_runner_on_unreachable","task":{"name":"Ping"},"hosts":{"web2":{"action":"ping","unreachable":true,"msg":"Failed to connect"}}}',
  '{"_event":"v2_playbook_on_stats","stats":{"image":{"ok":2,"changed":1,"failures":1,"unreachable":0,"skipped":1,"rescued":0,"ignored":1},"web2":{"ok":0,"changed":0,"failures":0,"unreachable":1,"skipped":0,"rescued":0,"ignored":0}}}',
];

test('jsonl events become task results with ok/changed/failed/skipped/unreachable', () => {
  const p = new PlaybookEventParser();
  const kinds = lines.map((l) => p.push(l)?.kind);
  assert.deepEqual(kinds, [undefined, 'play', 'task-start', 'result', 'result', 'result', 'result', 'result', 'result', 'stats']);
  assert.deepEqual(p.results.map((r) => [r.task, r.status]), [
    ['Install nginx', 'changed'], ['Enable', 'ok'], ['Reload', 'skipped'], ['Break', 'failed'], ['Tolerated', 'ok'], ['Ping', 'unreachable'],
  ]);
  assert.equal(p.results[0].play, 'web server');
  assert.equal(p.results[0].path, '/r/roles/web/tasks/main.yml:1');
  assert.equal(p.results[3].stderr, 'boom');
  assert.deepEqual(p.otherLines, ['[WARNING]: a warning that is not JSON']);
});

test('stats are summed across hosts', () => {
  const p = new PlaybookEventParser();
  lines.forEach((l) => p.push(l));
  const t = totals(p.stats);
  assert.equal(t.ok, 2);
  assert.equal(t.failures, 1);
  assert.equal(t.unreachable, 1);
  assert.equal(t.changed, 1);
});

test('failures are described with task, host, location and message, and the stderr of a command that refused', () => {
  const p = new PlaybookEventParser();
  lines.forEach((l) => p.push(l));
  assert.deepEqual(describeFailures(p.results), [
    'failed: Break [image] (/r/t.yml:20): non-zero return code\n  stderr: boom',
    'unreachable: Ping [web2]: Failed to connect',
  ]);
});

test('the failure that stopped a host is its last one, not an ignored one before it', async () => {
  const { fatalFailures, deferredServiceActions } = await import('../../src/provision/results.js');
  const r = (task: string, status: 'ok' | 'failed' | 'changed', extra = {}) => ({ play: 'p', task, host: 'image', action: 'x', status, ...extra });
  const stats = { image: { ok: 2, changed: 0, failures: 1, unreachable: 0, skipped: 0, rescued: 0, ignored: 1 } };
  const results = [r('ignored one', 'failed'), r('fine', 'ok'), r('the real one', 'failed')];
  assert.deepEqual(fatalFailures(results, stats).map((x) => x.task), ['the real one']);
  assert.deepEqual(fatalFailures(results, { image: { ...stats.image, failures: 0 } }), []);
  const services = [
    r('Start it', 'ok', { action: 'ansible.builtin.service', service: { name: 'ssh', state: 'started' } }),
    r('Restart handler', 'ok', { action: 'ansible.builtin.systemd', service: { name: 'nginx', state: 'restarted' } }),
    r('Enable only', 'changed', { action: 'ansible.builtin.service', service: { name: 'cron' } }),
    r('Stop it', 'ok', { action: 'ansible.builtin.service', service: { name: 'exim4', state: 'stopped' } }),
  ];
  assert.deepEqual(deferredServiceActions(services).map((d) => `${d.action} ${d.service}`), ['start ssh', 'restart nginx']);
});

test('a controller task refused by the read-only sandbox gets a hint saying so', async () => {
  const { failureHint } = await import('../../src/provision/chroot.js');
  const t = (msg: string) => ({ play: 'p', task: 't', host: 'image', action: 'copy', status: 'failed' as const, msg });
  assert.match(failureHint(t('Destination /etc not writable')), /delegate_to: localhost.*read-only/);
  assert.match(failureHint(t("[Errno 30] Read-only file system: '/etc/x'")), /cannot change the build host/);
  assert.match(failureHint(t('No package matching foo')), /--on-error=keep/);
});

test("Ansible's syntax errors are located, in 2.14's and 2.19's words, at the repository's path", async () => {
  const { playbookError } = await import('../../src/provision/run.js');
  const outside = (p: string) => p.replace(/^\/repo\//, '/srv/web/');
  const v219 = playbookError('/repo/playbook.yml', '[ERROR]: YAML parsing failed: While parsing a block mapping did not find expected key.\nOrigin: /repo/roles/web/tasks/main.yml:4:4\n\n4    bad indent: [\n', outside);
  assert.equal(v219.message, 'playbook syntax error: YAML parsing failed: While parsing a block mapping did not find expected key.');
  assert.deepEqual(v219.where, { file: '/srv/web/roles/web/tasks/main.yml', line: 4, column: 4 });
  assert.equal(v219.exitCode, 2);
  const v214 = playbookError('/repo/playbook.yml', "ERROR! We were unable to read either as JSON nor YAML\n\nThe error appears to be in '/repo/roles/web/tasks/main.yml': line 4, column 4, but may\n", outside);
  assert.match(v214.message, /^playbook syntax error: We were unable to read/);
  assert.deepEqual(v214.where, { file: '/srv/web/roles/web/tasks/main.yml', line: 4, column: 4 });
});
