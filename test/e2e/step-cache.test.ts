/**
 * The step cache on the example (src/pipeline/step-cache.ts). The shared example build ran with
 * the cache, which scripts/test.mjs empties at the start of every run, so its entries are this
 * run's. A rebuild with no change takes every output from the cache; with only the provisioned tree
 * left (and a damaged qcow2 entry) the playbook does not run, the disk, audit and formats are made
 * again, and in both cases every artifact, hashed here, is the released bytes. That a build from
 * scratch makes those bytes too is reproducible.test.ts (its builds run with --no-cache).
 */
import { strict as assert } from 'node:assert';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { firstDifferingBytes } from '../../src/reproduce/treediff.js';
import { builtExample, CACHE_DIR, E2E_DIR, git, kiln, mountsUnder, RUN_ID, sha256File, type BuildRecordLite, type BuiltExample } from './fixture.js';

let built: BuiltExample;
before(async () => { built = await builtExample(); });

const STEPS = join(CACHE_DIR, 'steps');

function entries(): { key: string; step: string; dir: string }[] {
  return (existsSync(STEPS) ? readdirSync(STEPS) : []).filter((k) => /^[0-9a-f]{64}$/.test(k)).map((key) => {
    const dir = join(STEPS, key);
    return { key, dir, step: (JSON.parse(readFileSync(join(dir, 'entry.json'), 'utf8')) as { step: string }).step };
  });
}

/** The log line that follows a step's heading: what the step said first. */
function firstLine(stderr: string, step: string): string {
  const lines = stderr.split('\n');
  const i = lines.findIndex((l) => new RegExp(`^\\[\\d+/\\d+\\] ${step}:`).test(l));
  return i >= 0 ? (lines[i + 1] ?? '').trim() : `(no ${step} step in the output)`;
}

async function assertReleasedBytes(record: BuildRecordLite): Promise<void> {
  const released = new Map(built.record.artifacts.map((a) => [a.format, a]));
  assert.deepEqual(record.artifacts.map((a) => a.format).sort(), [...released.keys()].sort());
  for (const a of record.artifacts) {
    const want = released.get(a.format);
    const got = await sha256File(a.file);
    if (!want || got === want.sha256) continue;
    const d = await firstDifferingBytes(a.file, want.file, 8);
    assert.fail(`${a.format}: the bytes of the release (hashed here): ${got}, released ${want.sha256}; ${d.count} bytes differ, the first at offsets ${d.offsets.join(', ')}`);
  }
}

describe('the step cache', () => {
  test('the example build stored its tree, disk, audit and every format', () => {
    const steps = entries().map((e) => e.step).sort();
    for (const s of ['tree', 'disk', 'audit', ...built.record.artifacts.map((a) => `format:${a.format}`)]) assert.ok(steps.includes(s), `an entry for ${s} (have: ${steps.join(', ')})`);
  });

  test('a rebuild with no change takes every output from the cache and gives the released bytes', async () => {
    const out = join(E2E_DIR, RUN_ID, 'cache-no-change-out');
    const r = await kiln(['build', '--no-release', '--json', '--out', out], { cwd: built.dir, cache: true });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(firstLine(r.stderr, 'configure'), /not needed: the disk is cached/);
    for (const s of ['provision', 'seal', 'stamp', 'disk', 'audit', 'formats']) assert.match(firstLine(r.stderr, s), /from cache/, `${s} took its output from the cache`);
    const record = JSON.parse(r.stdout) as BuildRecordLite;
    assert.deepEqual(record.provision, built.record.provision, "the cached disk carries the provision step's record");
    await assertReleasedBytes(record);
    assert.deepEqual(mountsUnder(built.dir), []);
  });

  test('with only the tree cached and a damaged qcow2 entry: the playbook does not run, the rest is made again, the same bytes', async () => {
    for (const e of entries()) {
      if (e.step === 'tree') continue;
      if (e.step !== 'format:qcow2') { rmSync(e.dir, { recursive: true, force: true }); continue; }
      // Damaged by replacing the file (a new inode), so the example's own qcow2, which shares the entry's, stays intact.
      const f = join(e.dir, 'artifact');
      copyFileSync(f, `${f}.new`);
      appendFileSync(`${f}.new`, 'x');
      renameSync(`${f}.new`, f);
    }
    const out = join(E2E_DIR, RUN_ID, 'cache-tree-out');
    const r = await kiln(['build', '--no-release', '--json', '--out', out], { cwd: built.dir, cache: true });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stderr, /cached format:qcow2 output [0-9a-f]{12} is damaged \(artifact is \d+ bytes, its record says \d+\): discarded, building it again/);
    assert.match(r.stderr, /cached: tree \(/, 'only the tree was found');
    assert.match(firstLine(r.stderr, 'provision'), /^from cache [0-9a-f]{12}$/, 'the tree was unpacked, the playbook did not run');
    assert.doesNotMatch(firstLine(r.stderr, 'disk'), /from cache/);
    assert.doesNotMatch(firstLine(r.stderr, 'audit'), /from cache/);
    const record = JSON.parse(r.stdout) as BuildRecordLite;
    await assertReleasedBytes(record);
    const steps = entries().map((e) => e.step);
    for (const s of ['disk', 'audit', 'format:qcow2']) assert.ok(steps.includes(s), `${s} is stored again`);
    assert.deepEqual(mountsUnder(built.dir), []);
  });
});

/**
 * A different build of an existing version: the same tag moved to another commit fails with the
 * conflict naming both manifests, and the release is unchanged. (A fresh runner served by a remote
 * step cache is test/e2e/pipeline.test.ts: its second run, every job in an empty copy.)
 */
describe('a release is never overwritten', () => {
  test('the same version tag moved to another commit: the build fails with the conflict naming both manifests, and the release is unchanged', async () => {
    const other = join(E2E_DIR, RUN_ID, 'image repos', 'example moved tag');
    rmSync(other, { recursive: true, force: true });
    git(join(built.dir), 'clone', '-q', built.dir, other);
    git(other, 'commit', '-q', '--allow-empty', '-m', 'the same files, another commit');
    git(other, 'tag', '-f', 'release-0.1.0');
    // The same store as the example's release.
    mkdirSync(join(other, '.kiln'), { recursive: true });
    symlinkSync(join(built.dir, '.kiln', 'store'), join(other, '.kiln', 'store'));
    const r = await kiln(['build', '--if-released', 'verify'], { cwd: other, cache: true });
    assert.equal(r.code, 1, r.stderr.slice(-3000));
    const digest = built.record.release?.digest ?? '';
    assert.match(r.stderr, new RegExp(`web@release-0\\.1\\.0 is already released in .* as ${digest} with other content than this build's sha256:[0-9a-f]{64}`));
    assert.match(r.stderr, /raw: released web-release-0\.1\.0\.raw sha256:[0-9a-f]{64} .* this build /);
    const list = await kiln(['releases', 'web', '--json'], { cwd: built.dir });
    assert.ok(list.stdout.includes(digest), 'the release is still the first build');
    assert.deepEqual(mountsUnder(other), []);
  });
});
