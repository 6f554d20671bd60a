/**
 * Reproducibility: the example, locked, built twice from the same tag in two separate repository
 * directories gives bit-identical artifacts in all seven formats, hashed here from the files (not
 * the digests Kiln recorded), each build's base tree made by its own mmdebstrap run (the locked
 * base trees a cache kept across runs would hand both are removed first); `kiln rebuild` says
 * "identical" for the release; changing one template variable changes the image; a playbook asking
 * for a package outside kiln.lock fails naming it.
 * The builds run two at a time (the two directories together; the rebuild beside the
 * changed-variable build): each build is mostly one busy core (mmdebstrap, dpkg, qemu-img), and the
 * machine has two.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { CACHE_DIR, E2E_DIR, RUN_ID, exampleRepo, kiln, sha256File, type BuildRecordLite } from './fixture.js';

const FORMATS = 'formats: [raw, qcow2, vmdk, vhd, vhdx, ova, gce]';
const DATE = '2026-11-01T12:00:00Z';

function setFormats(dir: string, formats = FORMATS): void {
  const f = join(dir, 'kiln.yaml');
  const s = readFileSync(f, 'utf8');
  assert.match(s, /^formats: .*$/m, 'the example names its formats on one line');
  writeFileSync(f, s.replace(/^formats: .*$/m, formats));
}

type Rec = BuildRecordLite & { source: { lockSha256?: string }; stderr: string };

async function buildJson(dir: string, args: string[]): Promise<Rec> {
  const r = await kiln(['build', '--json', ...args], { cwd: dir });
  assert.equal(r.code, 0, `build in ${dir} failed:\n${r.stderr.slice(-4000)}`);
  return { ...(JSON.parse(r.stdout) as Rec), stderr: r.stderr };
}

async function filesHashed(rec: BuildRecordLite): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const a of rec.artifacts) out[a.format] = await sha256File(a.file);
  return out;
}

/** Removes the locked base trees from the shared cache, so the next builds make theirs with mmdebstrap. */
function removeLockedBases(): number {
  const dir = join(CACHE_DIR, 'base');
  let n = 0;
  for (const f of existsSync(dir) ? readdirSync(dir).filter((x) => x.endsWith('.json')) : []) {
    let locked = false;
    try { locked = (JSON.parse(readFileSync(join(dir, f), 'utf8')) as { locked?: boolean }).locked === true; } catch { /* not a record */ }
    if (!locked) continue;
    rmSync(join(dir, f), { force: true });
    rmSync(join(dir, f.replace(/\.json$/, '.tar')), { force: true });
    n++;
  }
  return n;
}

const shaOf = (rec: BuildRecordLite) => Object.fromEntries(rec.artifacts.map((a) => [a.format, a.sha256]));

describe('reproducible builds from a lock', () => {
  let lockText = '';
  /** The directory `kiln lock` wrote: kiln.lock.d (the signed InRelease files) goes with kiln.lock. */
  let lockDir = '';
  const putLock = (d: string) => { writeFileSync(join(d, 'kiln.lock'), lockText); cpSync(join(lockDir, 'kiln.lock.d'), join(d, 'kiln.lock.d'), { recursive: true }); };
  let first: Rec;
  let repoA = '';
  /** The changed-variable build, started beside `kiln rebuild` and checked by its own test. */
  let changedBuild: Promise<BuildRecordLite> | undefined;

  test('kiln lock writes the sorted package set with sha256s', async () => {
    const dir = exampleRepo('repro-lock', { date: DATE, edit: (d) => setFormats(d) });
    const r = await kiln(['lock'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    lockText = readFileSync(join(dir, 'kiln.lock'), 'utf8');
    lockDir = dir;
    assert.match(lockText, /^lock: 2$/m);
    const kept = readdirSync(join(dir, 'kiln.lock.d')).sort();
    const named = [...lockText.matchAll(/inRelease: "([0-9a-f]{64})"/g)].map((m) => `${m[1]}.InRelease`);
    assert.deepEqual(kept, [...new Set(named)].sort(), 'kiln.lock.d holds exactly the signed InRelease files kiln.lock names');
    const entries = lockText.split('\n').filter((l) => l.startsWith('  - '));
    assert.ok(entries.length > 150, `a Debian image has >150 packages, the lock has ${entries.length}`);
    for (const n of ['nginx', 'openssh-server', 'linux-image-cloud-amd64', 'systemd']) assert.match(lockText, new RegExp(`name: "${n}", version: "[^"]+", architecture: "(amd64|all)", sha256: "[0-9a-f]{64}"`), n);
    assert.match(lockText, /^tools:\n {2}archive:\n {4}mirror: "[^"]+"\n {4}suite: "trixie"/m, 'the tools tree Ansible runs from is pinned too');
    assert.match(lockText.slice(lockText.indexOf('\ntools:')), /name: "ansible-core", version: "2\.19\.[^"]+", architecture: "all", sha256: "[0-9a-f]{64}"/);
    const names = lockText.slice(0, lockText.indexOf('\ntools:')).split('\n').filter((l) => l.startsWith('  - ')).map((l) => /name: "([^"]+)"/.exec(l)![1]);
    assert.deepEqual(names, [...names].sort(), 'entries are sorted by name');
    const again = await kiln(['lock', '--update'], { cwd: dir });
    assert.equal(again.code, 0, again.stderr.slice(-2000));
    assert.match(again.stderr, /is up to date: \d+ packages, nothing changed/);
  });

  test('two builds of the same tag in two directories give identical artifacts in every format', async () => {
    assert.ok(lockText, 'needs the lock');
    const withLock = (d: string) => { setFormats(d); putLock(d); };
    repoA = exampleRepo('repro-a', { tag: 'release-0.1.0', date: DATE, edit: withLock });
    const repoB = exampleRepo('repro-b', { tag: 'release-0.1.0', date: DATE, edit: withLock });
    removeLockedBases();
    // At once: both look the base up within seconds of starting and mmdebstrap takes far longer, so
    // each makes its own; the cache is shared, so this also shows that concurrent builds do not
    // disturb each other.
    const [a, second] = await Promise.all([buildJson(repoA, []), buildJson(repoB, ['--no-release', '--out', join(E2E_DIR, RUN_ID, 'repro-b-out')])]);
    first = a;
    for (const r of [first, second]) assert.match(r.stderr, /base tree built by mmdebstrap/, 'each build made its own base tree');
    assert.ok(first.release, 'the first build is released');
    assert.equal(first.commit, second.commit, 'same content and date: the same commit');
    assert.deepEqual(first.artifacts.map((a) => a.format).sort(), ['gce', 'ova', 'qcow2', 'raw', 'vhd', 'vhdx', 'vmdk']);
    const [hashedA, hashedB] = [await filesHashed(first), await filesHashed(second)];
    assert.deepEqual(hashedA, shaOf(first), 'what Kiln recorded is what is on disk');
    assert.deepEqual(hashedB, hashedA, 'every artifact is bit-identical');
    const lockSha = createHash('sha256').update(lockText).digest('hex');
    assert.equal(first.source.lockSha256, lockSha, 'the build record names the lock it installed');
    const step = (r: BuildRecordLite, n: string) => r.steps.find((s) => s.name === n)?.status;
    assert.equal(step(second, 'lock'), 'ok');
  });

  test('kiln rebuild reports the release identical', async () => {
    assert.ok(first?.release, 'needs the released build');
    changedBuild = startChangedBuild();
    changedBuild.catch(() => undefined); // checked by its own test
    const r = await kiln(['rebuild', 'web@release-0.1.0', '--json'], { cwd: repoA });
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    assert.match(r.stderr, /identical: web@release-0\.1\.0 rebuilt from [0-9a-f]{12}/);
    const report = JSON.parse(r.stdout) as { identical: boolean; artifacts: { format: string; released: string; rebuilt: string }[]; lockSha256: { released: string; rebuilt: string } };
    assert.equal(report.identical, true);
    assert.equal(report.artifacts.length, 7);
    for (const a of report.artifacts) assert.equal(a.rebuilt, shaOf(first)[a.format]);
    assert.equal(report.lockSha256.released, report.lockSha256.rebuilt);
  });

  function startChangedBuild(): Promise<BuildRecordLite> {
    const dir = exampleRepo('repro-var', {
      tag: 'release-0.1.0', date: DATE,
      edit: (d) => {
        setFormats(d, 'formats: [raw]');
        putLock(d);
        const f = join(d, 'roles/web/defaults/main.yml');
        writeFileSync(f, readFileSync(f, 'utf8').replace('web_title: "Kiln example"', 'web_title: "Kiln example, changed"'));
      },
    });
    return buildJson(dir, ['--no-release', '--out', join(E2E_DIR, RUN_ID, 'repro-var-out')]);
  }

  test('changing one template variable changes the image', async () => {
    assert.ok(first, 'needs the first build');
    const changed = await (changedBuild ?? startChangedBuild());
    assert.notEqual(shaOf(changed).raw, shaOf(first).raw, 'a different input gives a different raw disk');
  });

  test('a playbook asking for a package outside the lock fails, naming it', async () => {
    assert.ok(lockText, 'needs the lock');
    const dir = exampleRepo('repro-outside', {
      date: DATE,
      edit: (d) => {
        putLock(d);
        const f = join(d, 'roles/web/tasks/main.yml');
        writeFileSync(f, `${readFileSync(f, 'utf8')}\n- name: Install tree\n  ansible.builtin.apt:\n    name: tree\n    state: present\n`);
      },
    });
    const r = await kiln(['build', '--snapshot', '--no-release'], { cwd: dir });
    assert.equal(r.code, 1, r.stderr.slice(-3000));
    assert.match(r.stderr, /outside the lock: package 'tree' is not in kiln\.lock/);
    assert.match(r.stderr, /kiln lock --update/);
  });
});
