import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { KilnError } from '../../src/errors.js';
import { resolveVersion } from '../../src/version/git.js';

function repo(): string {
  const d = mkdtempSync(join(tmpdir(), 'kiln-ver-'));
  const g = (...a: string[]) => execFileSync('git', ['-C', d, '-c', 'user.email=a@b', '-c', 'user.name=n', ...a], { env: { ...process.env, GIT_COMMITTER_DATE: '2026-01-02T03:04:05Z', GIT_AUTHOR_DATE: '2026-01-02T03:04:05Z' } });
  g('init', '-q');
  writeFileSync(join(d, 'kiln.yaml'), 'name: x\n');
  g('add', '-A');
  g('commit', '-qm', 'x');
  return d;
}
const tag = (d: string, t: string) => execFileSync('git', ['-C', d, 'tag', t]);

test('the version is the release tag at HEAD and SOURCE_DATE_EPOCH the commit time', async () => {
  const d = repo();
  tag(d, 'release-0.1.0');
  tag(d, 'other-tag');
  const v = await resolveVersion(d, join(d, 'kiln.yaml'), { tagPattern: 'release-*', snapshot: false });
  assert.equal(v.version, 'release-0.1.0');
  assert.equal(v.sourceDateEpoch, Date.parse('2026-01-02T03:04:05Z') / 1000);
  assert.equal(v.snapshot, false);
  assert.equal(v.templatePath, 'kiln.yaml');
  assert.match(v.commit, /^[0-9a-f]{40}$/);
});

test('an untagged commit is refused for a release, with the way out', async () => {
  const d = repo();
  await assert.rejects(resolveVersion(d, join(d, 'kiln.yaml'), { tagPattern: 'release-*', snapshot: false }), (e: KilnError) => /no tag matching 'release-\*'/.test(e.message) && /--snapshot/.test(e.hint ?? ''));
});

test('a dirty tree is refused for a release; a snapshot build is marked', async () => {
  const d = repo();
  tag(d, 'release-0.1.0');
  writeFileSync(join(d, 'kiln.yaml'), 'name: changed\n');
  await assert.rejects(resolveVersion(d, join(d, 'kiln.yaml'), { tagPattern: 'release-*', snapshot: false }), /dirty tree/);
  const v = await resolveVersion(d, join(d, 'kiln.yaml'), { tagPattern: 'release-*', snapshot: true });
  assert.match(v.version, /^snapshot-[0-9a-f]{12}-dirty$/);
  assert.equal(v.snapshot, true);
});

test('the tag pattern is configurable; two release tags on one commit are refused', async () => {
  const d = repo();
  tag(d, 'v1.0.0');
  assert.equal((await resolveVersion(d, join(d, 'kiln.yaml'), { tagPattern: 'v*', snapshot: false })).version, 'v1.0.0');
  tag(d, 'v1.0.1');
  await assert.rejects(resolveVersion(d, join(d, 'kiln.yaml'), { tagPattern: 'v*', snapshot: false }), /several release tags/);
});
