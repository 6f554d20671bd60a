/** `kiln init`: a new image repository whose kiln.yaml loads and whose playbook passes Ansible's syntax check; nothing existing is overwritten. */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { imageName, initRepository } from '../../src/init/index.js';
import { KilnError } from '../../src/errors.js';
import { parseTemplate } from '../../src/template/load.js';

const base = mkdtempSync(join(tmpdir(), 'kiln-init-'));
after(() => rmSync(base, { recursive: true, force: true }));

test('kiln init writes a repository that loads, passes the syntax check, ignores .kiln/, and is a git repository', async () => {
  const dir = join(base, 'My Web_Image');
  const r = await initRepository(dir);
  assert.equal(r.name, 'my-web_image');
  assert.equal(r.gitInit, true);
  assert.ok(existsSync(join(dir, '.git')));
  const t = parseTemplate(readFileSync(join(dir, 'kiln.yaml'), 'utf8'), join(dir, 'kiln.yaml'));
  assert.equal(t.config.name, 'my-web_image');
  assert.equal(t.config.disk.hostname, 'my-web-image');
  assert.match(readFileSync(join(dir, 'kiln.yaml'), 'utf8'), /^# yaml-language-server: \$schema=\.kiln\/kiln\.schema\.json$/m);
  assert.equal(JSON.parse(readFileSync(join(dir, '.kiln/kiln.schema.json'), 'utf8')).title, 'kiln.yaml');
  assert.equal(readFileSync(join(dir, '.gitignore'), 'utf8'), '.kiln/\n');
  for (const f of ['roles/base/defaults/main.yml', 'roles/base/tasks/main.yml', 'roles/base/handlers/main.yml', 'roles/base/templates/motd.j2', 'README.md']) assert.ok(existsSync(join(dir, f)), f);
  // The host's ansible-playbook only checks the syntax (nothing runs on this machine).
  execFileSync('ansible-playbook', ['--syntax-check', '-i', 'localhost,', 'playbook.yml'], { cwd: dir, stdio: 'pipe', env: { ...process.env, ANSIBLE_LOCAL_TEMP: join(base, 'ansible') } });
  // .kiln/ is ignored: a commit holds exactly the repository's files.
  execFileSync('git', ['-C', dir, 'add', '-A']);
  const staged = execFileSync('git', ['-C', dir, 'diff', '--cached', '--name-only'], { encoding: 'utf8' }).trim().split('\n').sort();
  assert.deepEqual(staged, ['.gitignore', 'README.md', 'kiln.yaml', 'playbook.yml', 'roles/base/defaults/main.yml', 'roles/base/handlers/main.yml', 'roles/base/tasks/main.yml', 'roles/base/templates/motd.j2', 'roles/base/templates/sshd-kiln.conf.j2']);
});

test('kiln init overwrites nothing, keeps an existing git repository, and checks --name', async () => {
  const dir = join(base, 'existing');
  mkdirSync(dir);
  execFileSync('git', ['init', '-q', dir]);
  writeFileSync(join(dir, 'playbook.yml'), 'mine\n');
  const e = await initRepository(dir).then(() => undefined, (x: unknown) => x);
  assert.ok(e instanceof KilnError && /^nothing was written: .* already has playbook\.yml$/.test(e.message), String(e));
  assert.equal(readFileSync(join(dir, 'playbook.yml'), 'utf8'), 'mine\n');
  assert.ok(!existsSync(join(dir, 'kiln.yaml')));
  const sub = join(dir, 'images', 'db');
  const r = await initRepository(sub, { name: 'db' });
  assert.equal(r.gitInit, false, 'inside a repository: no nested git init');
  assert.ok(!existsSync(join(sub, '.git')));
  await assert.rejects(initRepository(join(base, 'x'), { name: 'Bad Name' }), /an image name is lower case/);
  assert.equal(imageName('/tmp/---'), 'image');
});
