/** `kiln <command> --help`: for every command, the usage, what it does, and each option with what it does; nothing runs. */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { helpText } from '../../src/cli/command.js';
import { commands } from '../../src/cli/commands.js';

const kiln = new URL('../../../bin/kiln.js', import.meta.url).pathname;

/**
 * Node options that make loading any cloud SDK fail (a module resolve hook): the AWS, Azure and
 * Google SDKs took 8 of the 8.6 s every kiln command needed to start, so only the commands that talk
 * to a cloud load them, when they do (dynamic imports in src/cli/publish.ts, prune.ts, build.ts and
 * src/source/image.ts).
 */
const resolveHook = `export async function resolve(s, c, n) { if (/^@(aws-sdk|azure|google-cloud)\\//.test(s)) throw new Error('cloud SDK loaded: ' + s); return n(s, c); }`;
const NO_CLOUD_SDK = ['--import', `data:text/javascript,${encodeURIComponent(`import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(resolveHook)}`)});`)}`];

test('the hook refuses a cloud SDK (so the tests below can fail)', () => {
  const r = spawnSync(process.execPath, [...NO_CLOUD_SDK, '--input-type=module', '-e', "await import('@google-cloud/storage')"], { encoding: 'utf8', cwd: new URL('../../..', import.meta.url).pathname });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /cloud SDK loaded: @google-cloud\/storage/);
});
const empty = mkdtempSync(join(tmpdir(), 'kiln-help-'));
after(() => rmSync(empty, { recursive: true, force: true }));

test('every command answers --help with its options, each described, and does nothing else, loading no cloud SDK', () => {
  for (const c of commands) {
    // In an empty directory: a command that did any work (find kiln.yaml, open a store) would fail or write.
    const r = spawnSync(process.execPath, [...NO_CLOUD_SDK, kiln, c.name, '--help'], { encoding: 'utf8', cwd: empty, env: { ...process.env, KILN_STATE_DIR: join(empty, 'state') } });
    assert.equal(r.status, 0, `${c.name}: ${r.stderr}`);
    assert.equal(r.stderr, '', c.name);
    assert.ok(r.stdout.startsWith(`usage: ${c.usage}\n\n${c.summary}\n`), c.name);
    const options = r.stdout.split('\noptions:\n')[1]?.split('\n').filter(Boolean) ?? [];
    assert.ok(options.length >= 1, `${c.name} lists its options`);
    for (const line of options) assert.match(line, /^ {2}(-[a-z], |    )--[a-z-]+( \S+)? +\S.{8,}$|^ {4,}\S.{8,}$/, `${c.name}: an option without a description: ${JSON.stringify(line)}`);
    // Every flag the usage line names is among them.
    for (const flag of new Set(c.usage.match(/(?<![\w-])--[a-z][a-z-]*/g) ?? [])) assert.match(r.stdout, new RegExp(`^ {2}(-[a-z], | {4})${flag}\\b`, 'm'), `${c.name}: ${flag} is in the usage but not described`);
  }
  assert.deepEqual(readdirSync(empty), [], 'no command wrote anything');
});

test('help lists options in order with value names, defaults and repeatable; a long flag wraps its description', () => {
  const text = helpText({ usage: 'kiln x', summary: 'Does x' }, {
    zeta: { type: 'boolean', description: 'the last one' },
    alpha: { type: 'string', short: 'a', value: 'FILE', multiple: true, description: 'a file' },
    mode: { type: 'string', default: 'fast', description: 'how' },
    'a-very-long-option-name-indeed-yes': { type: 'string', value: 'SOMETHING', description: 'wrapped' },
  });
  assert.equal(text, [
    'usage: kiln x', '', 'Does x', '', 'options:',
    '      --a-very-long-option-name-indeed-yes SOMETHING',
    '                                      wrapped',
    '  -a, --alpha FILE                    a file (repeatable)',
    '      --mode VALUE                    how (default: fast)',
    '      --zeta                          the last one',
    '  -h, --help                          show this help', '',
  ].join('\n'));
});

test('kiln completion bash completes command names and, from its --help, a command\'s flags', () => {
  const out = spawnSync(process.execPath, [kiln, 'completion', 'bash'], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  // `kiln` on PATH, as an installed one would be.
  const bin = mkdtempSync(join(tmpdir(), 'kiln-help-bin-'));
  try {
    writeFileSync(join(bin, 'kiln'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(kiln)} "$@"\n`, { mode: 0o755 });
    writeFileSync(join(bin, 'completion.bash'), out.stdout);
    const complete = (...words: string[]) => spawnSync('bash', ['-c', `source ${join(bin, 'completion.bash')}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _kiln; printf '%s\\n' "\${COMPREPLY[@]}"`],
      { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, cwd: empty }).stdout.split('\n').filter(Boolean).sort();
    assert.deepEqual(complete('kiln', 're'), ['rebuild', 'refresh', 'releases', 'report', 'resolve', 'revoke']);
    assert.deepEqual(complete('kiln', 'apply', '--ba'), ['--batch']);
    assert.deepEqual(complete('kiln', 'status', '--ch'), ['--channel', '--check']);
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
  const zsh = spawnSync(process.execPath, [kiln, 'completion', 'zsh'], { encoding: 'utf8' });
  assert.match(zsh.stdout, /bashcompinit\ncomplete -o filenames -F _kiln kiln\n$/);
  const bad = spawnSync(process.execPath, [kiln, 'completion', 'fish'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /takes one shell: bash or zsh/);
});
