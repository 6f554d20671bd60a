import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { buildSourcesLine, mirrorSourcesLine, mmdebstrapArgs } from '../../src/source/debian.js';
import type { KilnConfig } from '../../src/template/schema.js';

// A mirror the schema refuses, given straight to the source step as if the schema had been bypassed.
const HOSTILE = `http://deb.debian.org/debian'$(touch /tmp/kiln-pwned)'`;
const debian: KilnConfig['source']['debian'] = {
  suite: 'bookworm', mirror: HOSTILE, components: ['main'], kernel: 'linux-image-cloud-amd64', packages: [],
  keyring: '/usr/share/keyrings/debian-archive-keyring.gpg', verify: true, max_age: '365d',
};
const locked = { sourcesLine: 'deb [trusted=yes] http://127.0.0.1:8000/ ./', packageSet: 'x', sourceDateEpoch: 1, sourcesFile: '/work dir/image-sources.list' };

/** The hooks mmdebstrap would hand to sh -c: every --*-hook= that is not one of its special commands. */
function shellHooks(args: string[]): string[] {
  return args.filter((a) => /^--[a-z]+-hook=/.test(a)).map((a) => a.slice(a.indexOf('=') + 1))
    .filter((h) => !/^(copy-in|copy-out|tar-in|tar-out|upload|download|sync-in|sync-out) /.test(h));
}

test('a locked base writes the mirror into the image through an upload hook, never through a shell hook', () => {
  const args = mmdebstrapArgs(debian, '/w/base.tar', locked, locked.sourcesFile);
  assert.deepEqual(shellHooks(args), [], 'no hook runs in a shell');
  const hooks = args.filter((a) => /^--[a-z]+-hook=/.test(a));
  assert.ok(hooks.every((h) => !h.includes(HOSTILE)), 'the mirror is in no hook');
  const upload = hooks.find((h) => h.startsWith('--customize-hook=upload '));
  assert.ok(upload, 'the image gets its sources.list by upload');
  // mmdebstrap splits special hooks with Perl's shellwords: a work dir with a space stays one path.
  const words = JSON.parse(execFileSync('perl', ['-MText::ParseWords', '-MJSON::PP', '-e', 'print encode_json([shellwords($ARGV[0])])', upload.slice('--customize-hook='.length)], { encoding: 'utf8' })) as string[];
  assert.deepEqual(words, ['upload', '/work dir/image-sources.list', '/etc/apt/sources.list']);
  assert.equal(args.at(-1), locked.sourcesLine, 'packages come from the local repository of the lock');
});

test('an unlocked base names the mirror only in the sources argument, which mmdebstrap does not run', () => {
  const args = mmdebstrapArgs(debian, '/w/base.tar');
  assert.deepEqual(shellHooks(args), []);
  assert.deepEqual(args.filter((a) => a.includes(HOSTILE)), [`deb ${HOSTILE} bookworm main`]);
  assert.equal(args.at(-1), `deb ${HOSTILE} bookworm main`);
});

test('verify: false installs through a [trusted=yes] line but the image gets the plain line', () => {
  const d = { ...debian, mirror: 'http://deb.debian.org/debian', verify: false };
  assert.equal(mirrorSourcesLine(d), 'deb http://deb.debian.org/debian bookworm main', 'the image never says trusted=yes');
  assert.equal(buildSourcesLine(d), 'deb [trusted=yes] http://deb.debian.org/debian bookworm main');
  const args = mmdebstrapArgs(d, '/w/base.tar', undefined, '/w/image-sources.list');
  assert.equal(args.at(-1), buildSourcesLine(d));
  assert.ok(args.includes("--customize-hook=upload /w/image-sources.list /etc/apt/sources.list"), "the image's sources.list is uploaded over the build's");
  assert.throws(() => mmdebstrapArgs(d, '/w/base.tar'), /needs its own sources\.list/);
  assert.equal(buildSourcesLine({ ...d, verify: true }), mirrorSourcesLine(d), "a verified build uses the image's line");
});
