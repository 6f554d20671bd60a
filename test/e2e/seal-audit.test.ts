/**
 * Issue 3 on the real image: the example audits clean; a playbook that leaves a secret behind fails
 * the build with that finding. (Two VMs from one image being distinct working machines is checked
 * on the example's two boots in example-image.test.ts.)
 */
import { strict as assert } from 'node:assert';
import { readFileSync, writeFileSync, mkdirSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { artifact, builtExample, exampleRepo, kiln, mountsUnder, type BuiltExample } from './fixture.js';

let built: BuiltExample;
before(async () => { built = await builtExample(); });

describe('kiln audit on the example image', () => {
  test('the raw disk and the qcow2 audit clean (exit 0, no findings)', async () => {
    const raw = await kiln(['audit', artifact(built, 'raw')], { cwd: built.dir });
    assert.equal(raw.code, 0, raw.stdout + raw.stderr);
    const q = await kiln(['audit', '--json', artifact(built, 'qcow2')], { cwd: built.dir });
    assert.equal(q.code, 0, q.stdout + q.stderr);
    assert.deepEqual(JSON.parse(q.stdout).findings ?? JSON.parse(q.stdout), []);
  });

  test('kiln seal --list names every operation with a description', async () => {
    const r = await kiln(['seal', '--list'], { cwd: built.dir });
    assert.equal(r.code, 0);
    for (const op of ['ssh-hostkeys', 'machine-id', 'net-hwaddr', 'dhcp-leases', 'cloud-init', 'waagent', 'provisioner-artifacts', 'shell-history', 'logs', 'tmp-files', 'package-cache', 'random-seed', 'backup-files', 'ssh-userdir']) {
      assert.match(r.stdout + r.stderr, new RegExp(`^\\s*${op}\\b.*\\S`, 'm'), op);
    }
  });
});

test('a playbook that leaves an AWS key in a file fails the build with that finding', async () => {
  const dir = exampleRepo('aws-key', {
    tag: 'release-0.1.0',
    edit: (d) => {
      const tasks = join(d, 'roles/web/tasks/main.yml');
      writeFileSync(tasks, readFileSync(tasks, 'utf8') + `
- name: Configure the backup client (oops, with a real-looking key)
  ansible.builtin.copy:
    dest: /etc/backup-client.env
    content: "AWS_ACCESS_KEY_ID=AKIAQWERTYUIOPASDFGH\\nAWS_SECRET_ACCESS_KEY=w8Jq2vXh5LmN0pR3sT6uY9zA1bC4dE7fG0hI2jK5\\n"
    mode: "0600"
`);
      writeFileSync(join(d, 'kiln.yaml'), readFileSync(join(d, 'kiln.yaml'), 'utf8').replace(/^formats: .*$/m, 'formats: [raw]'));
    },
  });
  const r = await kiln(['build'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr.slice(-3000));
  assert.match(r.stderr, /the audit found \d+ problem\(s\) in the image/);
  assert.match(r.stderr, /\/etc\/backup-client\.env/);
  assert.match(r.stderr, /aws/i);
  assert.deepEqual(mountsUnder(dir), []);
  const out = join(dir, '.kiln/out');
  assert.deepEqual(existsSync(out) ? readdirSync(out) : [], [], 'no artifact of a failed build');
  assert.equal(existsSync(join(dir, '.kiln/store/index.json')) && readFileSync(join(dir, '.kiln/store/index.json'), 'utf8').includes('release-0.1.0'), false, 'nothing released');
  mkdirSync(join(dir, '.kiln'), { recursive: true });
});
