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

test('the Debian suite is bookworm or trixie; omitted, bookworm; any other is refused at its line, naming the two', () => {
  const withSuite = (s: string) => good.replace('    packages: [curl]', `    suite: ${s}\n    packages: [curl]`);
  assert.equal(parseTemplate(withSuite('trixie'), join(repo(), 'kiln.yaml')).config.source.debian.suite, 'trixie');
  assert.equal(parseTemplate(withSuite('bookworm'), join(repo(), 'kiln.yaml')).config.source.debian.suite, 'bookworm');
  for (const other of ['sid', 'forky', 'bullseye', 'stable']) {
    const p = problems(withSuite(other));
    assert.equal(p[0].line, 4, other);
    assert.match(p[0].message, new RegExp(`source\\.debian\\.suite: expected one of "bookworm", "trixie", got string "${other}"`));
  }
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

test("a mirror URL with a shell command in it is refused at its line, with the file's name", () => {
  const dir = repo();
  const p = problems(good.replace('    packages: [curl]', `    packages: [curl]\n    mirror: "http://deb.debian.org/debian'$(touch /tmp/x)'"`), dir);
  assert.equal(p.length, 1);
  assert.equal(p[0].file, join(dir, 'kiln.yaml'));
  assert.deepEqual([p[0].line, p[0].column], [5, 13]);
  assert.match(p[0].message, /^source\.debian\.mirror: string "http:\/\/deb\.debian\.org\/debian'\$\(touch \/tmp\/x\)'" does not match /);
});

test('mirror and snapshot are http(s) URLs of host, port and path; anything else is located', () => {
  const withMirror = (m: string, key = 'mirror') => good.replace('    packages: [curl]', `    packages: [curl]\n    ${key}: ${JSON.stringify(m)}`);
  for (const ok of ['http://deb.debian.org/debian', 'https://deb.debian.org/debian/', 'http://127.0.0.1:3142/debian', 'http://[fd00::1]:3142/debian', 'https://snapshot.debian.org/archive/debian/20250101T000000Z/']) {
    assert.equal(parseTemplate(withMirror(ok), join(repo(), 'kiln.yaml')).config.source.debian.mirror, ok);
    assert.equal(parseTemplate(withMirror(ok, 'snapshot'), join(repo(), 'kiln.yaml')).config.source.debian.snapshot, ok);
  }
  for (const bad of ['ftp://deb.debian.org/debian', 'file:///srv/mirror', 'http://deb.debian.org/debian main contrib', 'http://user:secret@mirror/debian',
    'http://mirror/debian;id', 'http://mirror/$(id)', 'http://mirror/`id`', 'http://mirror/a"b', 'http://mirror/debian\nhttp://evil/',
    'http://-oProxyCommand=x/', 'http://mirror:99999/debian', 'http://[::1/debian']) {
    for (const key of ['mirror', 'snapshot']) {
      const p = problems(withMirror(bad, key));
      assert.equal(p.length, 1, `${key}: ${bad}`);
      assert.equal(p[0].line, 5, `${key}: ${bad}`);
      assert.match(p[0].message, new RegExp(`^source\\.debian\\.${key}: `), `${key}: ${bad}`);
    }
  }
});

test('packages, kernel and components are Debian names; a shell word or an option is located', () => {
  const ok = parseTemplate(good.replace('    packages: [curl]', '    packages: [curl, libstdc++6, python3.11, nginx=1.22.1-9+deb12u1]\n    components: [main, non-free-firmware]\n    kernel: linux-image-amd64'), join(repo(), 'kiln.yaml'));
  assert.deepEqual(ok.config.source.debian.packages, ['curl', 'libstdc++6', 'python3.11', 'nginx=1.22.1-9+deb12u1']);
  for (const [line, at] of [
    ['    packages: [curl, "$(id)"]', 'source.debian.packages.1'],
    ['    packages: [curl, "a,b"]', 'source.debian.packages.1'],
    ['    packages: ["--allow-unauthenticated"]', 'source.debian.packages.0'],
    ['    packages: ["./local.deb"]', 'source.debian.packages.0'],
    ['    packages: [Curl]', 'source.debian.packages.0'],
    ['    kernel: "linux image"', 'source.debian.kernel'],
    ['    components: ["main contrib"]', 'source.debian.components.0'],
    ['    components: ["main,evil"]', 'source.debian.components.0'],
    ['    components: []', 'source.debian.components'],
  ]) {
    const p = problems(good.replace('    packages: [curl]', line));
    assert.equal(p.length, 1, line);
    assert.equal(p[0].line, 4, line);
    assert.ok(p[0].message.startsWith(`${at}: `), `${line}: ${p[0].message}`);
  }
});

test('disk.hostname is an RFC 1123 host name: an option or a second line is located', () => {
  assert.equal(parseTemplate(`${good}disk:\n  hostname: web-1.example.org\n`, join(repo(), 'kiln.yaml')).config.disk.hostname, 'web-1.example.org');
  for (const bad of ['-F/etc/shadow', 'web 1', 'web\\nevil', 'web_1', '-web', 'web-', 'a'.repeat(64)]) {
    const p = problems(`${good}disk:\n  hostname: "${bad}"\n`);
    assert.equal(p.length, 1, bad);
    assert.equal(p[0].line, 9, bad);
    assert.match(p[0].message, /^disk\.hostname: /, bad);
  }
});

test('apply.health: defaults filled in; a check of nothing, a bad status or duration is refused at its line', () => {
  const d = repo();
  const t = parseTemplate(`${good}apply:\n  health:\n    http: { url: "http://127.0.0.1/" }\n`, join(d, 'kiln.yaml'));
  assert.deepEqual(t.config.apply.health, { http: { url: 'http://127.0.0.1/', status: 200, from: 'host', validate_certs: true }, timeout: '60s', interval: '5s' });
  assert.deepEqual(parseTemplate(good, join(d, 'kiln.yaml')).config.apply, {});
  let p = problems(`${good}apply:\n  health:\n    timeout: 30s\n`);
  assert.deepEqual(p.map((x) => [x.line, x.message]), [[10, 'apply.health checks nothing: give http (a URL and the status expected), command, or both']]);
  p = problems(`${good}apply:\n  health:\n    http: { url: "http://127.0.0.1/", status: 700 }\n`);
  assert.equal(p[0].line, 10);
  assert.match(p[0].message, /apply\.health\.http\.status/);
  p = problems(`${good}apply:\n  health:\n    command: "true"\n    interval: soon\n`);
  assert.equal(p[0].line, 11);
  assert.match(p[0].message, /apply\.health\.interval: string "soon" does not match/);
  p = problems(`${good}apply:\n  health:\n    http: { url: "ftp://x/" }\n`);
  assert.match(p[0].message, /apply\.health\.http\.url: string "ftp:\/\/x\/" does not match/);
});
