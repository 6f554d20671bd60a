import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { quoteArg } from '../../src/exec.js';

// Values a mirror URL, a path or a host could carry if nothing else stopped them.
const HOSTILE = [
  `'$(touch /tmp/kiln-pwned)'`, '$(id)', '`id`', 'a b', 'a\tb', 'a\nb', `it's`, `"double"`, '\\back\\slash', '-oProxyCommand=sh -c id',
  '; rm -rf ~', '*', '', '~root', 'x&y|z>w<v', '${HOME}', '#comment', 'ünïcode',
];

test('a quoted value is one word to sh, exactly as given', () => {
  for (const v of HOSTILE) {
    const got = execFileSync('sh', ['-c', `printf '%s' ${quoteArg(v)}`], { encoding: 'utf8' });
    assert.equal(got, v, JSON.stringify(v));
  }
});

test("a quoted value is one word to Python's shlex (how Ansible splits ANSIBLE_SSH_ARGS)", () => {
  const line = HOSTILE.map(quoteArg).join(' ');
  const got = JSON.parse(execFileSync('python3', ['-c', 'import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))', line], { encoding: 'utf8' })) as string[];
  assert.deepEqual(got, HOSTILE);
});

test("a quoted value is one word to Perl's shellwords (how mmdebstrap splits a special hook)", () => {
  const line = `upload ${HOSTILE.filter((v) => v !== '').map(quoteArg).join(' ')} /etc/apt/sources.list`;
  const got = JSON.parse(execFileSync('perl', ['-MText::ParseWords', '-MJSON::PP', '-e', 'print JSON::PP->new->encode([shellwords($ARGV[0])])', line], { encoding: 'utf8' })) as string[];
  assert.deepEqual(got, ['upload', ...HOSTILE.filter((v) => v !== ''), '/etc/apt/sources.list']);
});
