import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import type { HostOutcome } from '../../src/apply/index.js';
import { diffParts, lineDiff, summaryLines, taskLine } from '../../src/apply/report.js';

const totals = { ok: 7, changed: 1, failures: 0, unreachable: 0, skipped: 0, rescued: 0, ignored: 0 };

test('a line diff keeps common lines and marks removed before added', () => {
  assert.deepEqual(lineDiff('a\nb\nc\n', 'a\nB\nc\n'), [' a', '-b', '+B', ' c']);
  assert.deepEqual(lineDiff('', 'x\n'), ['+x']);
  assert.deepEqual(lineDiff('x\ny\n', 'y\n'), ['-x', ' y']);
});

test('Ansible diffs come as one object or a list; non-text diffs are ignored', () => {
  assert.equal(diffParts({ before: 'a', after: 'b' }).length, 1);
  assert.equal(diffParts([{ before: 'a', after: 'b' }, { prepared: 'x' }]).length, 1);
  assert.equal(diffParts(undefined).length, 0);
});

test('the summary has one line per host with its versions and counts, then what changed and the diff', () => {
  const o: HostOutcome[] = [
    {
      host: '127.0.0.1:2222', id: '127.0.0.1_2222', from: 'release-0.2.0', to: 'release-0.2.0', status: 'drift', changed: ['demo : Write the config'], failed: [], totals,
      diffs: [{ play: 'p', task: 'demo : Write the config', host: '127.0.0.1:2222', action: 'template', status: 'changed',
        diff: [{ before: 'a = 1\nedited\n', after: 'a = 1\n', before_header: '/etc/demo.conf', after_header: '/tmp/kiln-apply-x/ansible-local/tmp1' }] }],
    },
    { host: 'localhost:2222', id: 'localhost_2222', from: 'release-0.2.0', to: 'release-0.2.0', status: 'in sync', changed: [], failed: [], totals: { ...totals, changed: 0 } },
  ];
  const lines = summaryLines(o, { check: true, diff: true });
  assert.equal(lines[0], 'summary (2 hosts):');
  assert.match(lines[1], /^ {2}127\.0\.0\.1:2222 {2}drift +release-0\.2\.0 -> release-0\.2\.0 {2}ok=7 changed=1 failed=0 unreachable=0$/);
  assert.equal(lines[2], '      would change: demo : Write the config');
  assert.deepEqual(lines.slice(3, 8), ['      demo : Write the config:', '        --- /etc/demo.conf', '        +++ /etc/demo.conf (release-0.2.0)', '         a = 1', '        -edited']);
  assert.match(lines[8], /^ {2}localhost:2222 +in sync/);
  assert.equal(summaryLines(o, { check: false, diff: false }).filter((l) => /diff|---/.test(l)).length, 0);
});

test('a task line names the host, status and task, and the error of a failure', () => {
  assert.equal(taskLine({ play: 'p', task: 't', host: 'h:1', action: 'x', status: 'failed', msg: 'boom\nmore' }), '  h:1  failed      t: boom');
  assert.equal(taskLine({ play: 'p', task: 't', host: 'h:1', action: 'x', status: 'ok' }), '  h:1  ok          t');
});
