/** YAML syntax errors point at their cause (the token that opened the construct, the key out of line), not where the parser gave up. */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseLock } from '../../src/lock/file.js';
import { parseTemplate, TemplateError } from '../../src/template/load.js';
import { yamlSyntaxProblems } from '../../src/yaml-errors.js';
import { KilnError } from '../../src/errors.js';

const where = (text: string) => yamlSyntaxProblems(text).map((p) => [p.line, p.column, p.message]);

test('an unclosed [ or { is reported where it opens, naming the closer expected', () => {
  assert.deepEqual(where('name: web\nsource:\n  debian:\n    packages: [curl, vim\nprovision:\n  playbook: p.yml\n'),
    [[4, 15, 'invalid YAML: "[" is not closed: expected "]" (a flow sequence opened here)']]);
  assert.deepEqual(where('name: web\nvm: { cpus: 2\nformats: [raw]\n'), [[2, 5, 'invalid YAML: "{" is not closed: expected "}" (a flow mapping opened here)']]);
  // The last line of the file: the parser stops at the end, the cause is the bracket.
  assert.deepEqual(where('name: web\nformats: [raw, qcow2\n'), [[2, 10, 'invalid YAML: "[" is not closed: expected "]" (a flow sequence opened here)']]);
  // Nested: the inner one left open is among the causes named.
  assert.ok(where('a: [1, {b: 2]\n').some(([line, column, m]) => line === 1 && column === 8 && /"\{" is not closed/.test(String(m))));
});

test('an unclosed quote is reported where it opens; an escaped quote does not close it', () => {
  assert.deepEqual(where('name: "web\nprovision:\n  playbook: p.yml\n'), [[1, 7, 'invalid YAML: the quoted string opened here with " is not closed']]);
  assert.deepEqual(where('a: ok\nname: "web\\"\n').map((x) => x.slice(0, 2)), [[2, 7]]);
  assert.deepEqual(where("a: 'x\n").map((x) => x.slice(0, 2)), [[1, 4]]);
});

test('a key out of line is reported at the key, not at column 1; valid YAML has no problems', () => {
  assert.deepEqual(where('name: web\nsource:\n  debian:\n    suite: trixie\n   mirror: http://x\n'), [[5, 4, 'invalid YAML: All mapping items must start at the same column']]);
  assert.deepEqual(where('name: web\nprovision:\n\tplaybook: p.yml\n'), [[3, 2, 'invalid YAML: Tabs are not allowed as indentation']]);
  assert.deepEqual(where('a: [1, 2]\nb: {c: "d"}\ne: \'f\'\n'), []);
});

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

test('kiln.yaml and kiln.lock report the cause with file, line and column', () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-yaml-'));
  dirs.push(d);
  writeFileSync(join(d, 'p.yml'), '- hosts: all\n  tasks: []\n');
  const file = join(d, 'kiln.yaml');
  const e = (() => { try { parseTemplate('name: web\nsource:\n  debian:\n    packages: [curl\nprovision:\n  playbook: p.yml\n', file); } catch (x) { return x; } })();
  assert.ok(e instanceof TemplateError, String(e));
  assert.deepEqual(e.problems.map((p) => [p.file, p.line, p.column]), [[file, 4, 15]]);
  const l = (() => { try { parseLock('lock: 2\npackages: [\n', 'kiln.lock'); } catch (x) { return x; } })();
  assert.ok(l instanceof KilnError, String(l));
  assert.deepEqual([l.where.file, l.where.line, l.where.column], ['kiln.lock', 2, 11]);
  assert.match(l.message, /^kiln\.lock is not valid YAML: "\[" is not closed/);
});

test("the playbook's syntax check: Ansible's YAML error is moved to the bracket that opened it (a role's tasks file)", async () => {
  const { playbookError } = await import('../../src/provision/run.js');
  const { execFileSync } = await import('node:child_process');
  const { mkdirSync } = await import('node:fs');
  const d = mkdtempSync(join(tmpdir(), 'kiln-yaml-pb-'));
  dirs.push(d);
  mkdirSync(join(d, 'roles/r/tasks'), { recursive: true });
  writeFileSync(join(d, 'pb.yml'), '- hosts: all\n  roles: [r]\n');
  const tasks = join(d, 'roles/r/tasks/main.yml');
  writeFileSync(tasks, '- name: x\n  ansible.builtin.debug:\n    msg: [a, b\n- name: y\n  ansible.builtin.debug: {msg: z}\n');
  // The host's ansible-playbook, as the build's sandbox runs it: it names line 4, where its parser gave up.
  let out = '';
  try {
    execFileSync('ansible-playbook', ['--syntax-check', '-i', 'localhost,', 'pb.yml'], { cwd: d, encoding: 'utf8', stdio: 'pipe', env: { ...process.env, ANSIBLE_LOCAL_TEMP: join(d, 't') } });
  } catch (e) {
    out = String((e as { stderr?: string }).stderr) + String((e as { stdout?: string }).stdout);
  }
  assert.match(out, /main\.yml': line 4/);
  const err = playbookError(join(d, 'pb.yml'), out);
  assert.deepEqual([err.where.file, err.where.line, err.where.column], [tasks, 3, 10]);
  assert.equal(err.message, 'playbook syntax error: "[" is not closed: expected "]" (a flow sequence opened here)');
  assert.match(err.detail ?? '', /did not find expected ',' or '\]'/);
});
