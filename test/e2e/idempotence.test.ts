/**
 * Idempotence is proven at build time: Kiln runs the playbook a second time and a task that reports
 * "changed" again fails the build, naming it (or, with provision.idempotence: warn, is reported).
 * Raw only, so a build that passes provisioning stays short.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { exampleRepo, kiln, type BuildRecordLite } from './fixture.js';

const NOT_IDEMPOTENT = `- name: Record the build time
  ansible.builtin.command: date
`;

function repo(name: string, mode: 'fail' | 'warn'): string {
  return exampleRepo(name, {
    tag: 'release-0.1.0',
    edit: (d) => {
      const yaml = join(d, 'kiln.yaml');
      writeFileSync(yaml, readFileSync(yaml, 'utf8').replace(/^formats: .*$/m, 'formats: [raw]').replace('idempotence: fail', `idempotence: ${mode}`));
      const tasks = join(d, 'roles/web/tasks/main.yml');
      writeFileSync(tasks, readFileSync(tasks, 'utf8') + '\n' + NOT_IDEMPOTENT);
    },
  });
}

// One build at a time: unlocked builds share the cache's apt lists and archives, and apt's locks on
// them make a second build at once fail (README, Known limits).
describe('idempotence is checked at build time', () => {
  test('a task that changes again on the second run fails the build, naming the task', async () => {
    const dir = repo('idempotence-fail', 'fail');
    const r = await kiln(['build'], { cwd: dir });
    assert.equal(r.code, 1, r.stderr.slice(-3000));
    assert.match(r.stderr, /playbook\.yml: the playbook is not idempotent: 1 task\(s\) changed on the second run/);
    assert.match(r.stderr, /\| changed: web : Record the build time \(.*roles\/web\/tasks\/main\.yml:\d+\)/);
    assert.match(r.stderr, /hint: .*provision\.idempotence: warn/);
    assert.match(r.stderr, /step: provision/);
    const out = join(dir, '.kiln/out');
    assert.deepEqual(existsSync(out) ? readdirSync(out) : [], [], 'no artifact is written');
  });

  test('with provision.idempotence: warn the build succeeds and reports the task', async () => {
    const dir = repo('idempotence-warn', 'warn');
    const r = await kiln(['build', '--json', '--no-release'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stderr, /warning: the playbook is not idempotent: 1 task\(s\) changed on the second run:\n\s+web : Record the build time/);
    const rec = JSON.parse(r.stdout) as BuildRecordLite;
    assert.deepEqual(rec.provision.idempotence?.changed.map((c) => c.replace(/ \(.*\)$/, '')), ['web : Record the build time']);
    assert.deepEqual(rec.artifacts.map((a) => a.format), ['raw']);
  });
});
