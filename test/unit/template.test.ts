import { strict as assert } from 'node:assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseTemplate, TemplateError } from '../../src/template/load.js';

function repo(): string {
  const d = mkdtempSync(join(tmpdir(), 'kiln-tpl-'));
  writeFileSync(join(d, 'playbook.yml'), '- hosts: all\n  tasks: []\n');
  return d;
}

const good = `name: web
source:
  debian:
    packages: [curl]
provision:
  playbook: playbook.yml
formats: [raw, qcow2, ova]
`;

test('a valid kiln.yaml loads with defaults filled in', () => {
  const d = repo();
  const t = parseTemplate(good, join(d, 'kiln.yaml'));
  assert.equal(t.config.name, 'web');
  assert.equal(t.config.source.debian.suite, 'bookworm');
  assert.equal(t.config.source.debian.mirror, 'http://deb.debian.org/debian');
  assert.equal(t.config.source.debian.verify, true);
  assert.deepEqual(t.config.disk.firmware, ['bios', 'uefi']);
  assert.equal(t.config.version.tag_pattern, 'release-*');
  assert.equal(t.config.provision.idempotence, 'fail');
  assert.equal(t.config.provision.ansible, 'trixie', 'Ansible runs from a trixie tools tree unless kiln.yaml says otherwise');
  assert.deepEqual(t.config.formats, ['raw', 'qcow2', 'ova']);
  assert.equal(t.playbook, join(d, 'playbook.yml'));
});

function problems(text: string, dir = repo()) {
  try {
    parseTemplate(text, join(dir, 'kiln.yaml'));
  } catch (e) {
    assert.ok(e instanceof TemplateError, String(e));
    return e.problems;
  }
  assert.fail('expected a TemplateError');
}

test('an unknown key is reported at its line and column with the keys expected', () => {
  const p = problems(good.replace('    packages: [curl]', '    packages: [curl]\n    mirorr: http://x'));
  assert.equal(p.length, 1);
  assert.equal(p[0].line, 5);
  assert.equal(p[0].column, 5);
  assert.match(p[0].message, /unknown key 'mirorr' in source\.debian \(expected one of: .*mirror/);
  assert.match(p[0].file, /kiln\.yaml$/);
});

test('a wrong type names what was expected and what was found', () => {
  const p = problems(good.replace('packages: [curl]', 'packages: curl'));
  assert.equal(p[0].line, 4);
  assert.match(p[0].message, /source\.debian\.packages: expected a list, got string "curl"/);
});

test('an unknown format lists the formats Kiln writes', () => {
  const p = problems(good.replace('[raw, qcow2, ova]', '[raw, iso]'));
  assert.equal(p[0].line, 7);
  assert.match(p[0].message, /formats\.1: expected one of "raw", "qcow2", "vmdk", "vhd", "vhdx", "ova", "gce", got string "iso"/);
});

test('a missing required key names the key', () => {
  const p = problems('name: web\nsource:\n  debian: {}\n');
  assert.match(p[0].message, /missing required key 'provision' in top level/);
});

test('a playbook that does not exist is an error at the playbook line', () => {
  const p = problems(good.replace('playbook.yml', 'nope.yml'));
  assert.equal(p[0].line, 6);
  assert.match(p[0].message, /playbook not found: nope\.yml/);
});

test('malformed YAML is reported with its position', () => {
  const p = problems('name: web\nsource: [unclosed\nprovision:\n  playbook: x\n');
  assert.ok(p[0].line >= 2, `line ${p[0].line}`);
  assert.match(p[0].message, /invalid YAML/);
});

test('all problems are reported at once, in file order', () => {
  const p = problems('name: Web!\nbogus: 1\nsource:\n  debian: {}\nprovision:\n  playbook: playbook.yml\n');
  assert.deepEqual(p.map((x) => x.line), [1, 2]);
});

test('provision.ansible names a tools suite or the host; anything else is located', () => {
  for (const v of ['trixie', 'bookworm', 'host']) assert.equal(parseTemplate(good.replace('  playbook: playbook.yml', `  playbook: playbook.yml\n  ansible: ${v}`), join(repo(), 'kiln.yaml')).config.provision.ansible, v);
  const p = problems(good.replace('  playbook: playbook.yml', '  playbook: playbook.yml\n  ansible: sid'));
  assert.equal(p.length, 1);
  assert.equal(p[0].line, 7);
  assert.match(p[0].message, /trixie.*bookworm.*host/);
});
