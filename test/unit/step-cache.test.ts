/**
 * The step cache (src/pipeline/step-cache.ts, cache-keys.ts): each input class changes the key it
 * should and no other; an entry cut short, rewritten or mislabelled is a miss, never an output; the
 * cache is bounded; and the steps use it: a cached tree is unpacked instead of provisioned, cached
 * formats are linked instead of written, and what comes out is the same bytes.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { silentLogger, type Logger } from '../../src/log.js';
import { newContext } from '../../src/pipeline/build.js';
import { cacheKeys } from '../../src/pipeline/cache-keys.js';
import { step, type BuildContext, type BuildState, type BuildStep } from '../../src/pipeline/context.js';
import { checkPlan } from '../../src/pipeline/plan.js';
import { runSteps } from '../../src/pipeline/runner.js';
import { cacheKey, StepCache } from '../../src/pipeline/step-cache.js';
import { cacheStep, configureStep, formatsStep, provisionStep, sealStep, versionStep } from '../../src/pipeline/steps/index.js';
import { loadTemplate } from '../../src/template/load.js';
import { buildDisk } from './seal-fixture.js';
import { BUILD_WRITTEN_MTIME } from '../../src/disk/tree.js';

const work = mkdtempSync(join(tmpdir(), 'kiln-step-cache-test-'));
const repo = join(work, 'repo');
after(() => rmSync(work, { recursive: true, force: true }));

const git = (...args: string[]) => execFileSync('git', ['-C', repo, '-c', 'user.email=t@kiln.test', '-c', 'user.name=T', ...args], { encoding: 'utf8' }).trim();

const YAML = [
  'name: web',
  'source: { debian: { suite: bookworm } }',
  'provision: { playbook: playbook.yml, vars: { greeting: hello } }',
  'disk: { size: 64MiB, hostname: cached }',
  'formats: [raw, qcow2]',
  'release: { store: ./store }',
  '',
].join('\n');

before(() => {
  mkdirSync(join(repo, 'roles/web/tasks'), { recursive: true });
  writeFileSync(join(repo, 'kiln.yaml'), YAML);
  writeFileSync(join(repo, 'playbook.yml'), '- hosts: all\n  roles: [web]\n');
  writeFileSync(join(repo, 'roles/web/tasks/main.yml'), '- ansible.builtin.debug: { msg: hi }\n');
  writeFileSync(join(repo, '.gitignore'), '.kiln/\nstore/\n');
  execFileSync('git', ['init', '-q', repo]);
  git('add', '.');
  git('commit', '-qm', 'image');
  git('tag', 'release-0.1.0');
});

const warnings: string[] = [];
const logger: Logger = { ...silentLogger, warn: (m: string) => { warnings.push(m); } };

function context(state: BuildState = {}, snapshot = false): BuildContext {
  const ctx = newContext(loadTemplate(join(repo, 'kiln.yaml')), { snapshot, onError: 'cleanup', cacheDir: join(work, 'cache') }, logger);
  return Object.assign(ctx, state);
}

const TRUST = { verified: true, inReleaseSha256: 'a'.repeat(64), archiveDate: 1700000000 };
const source = (baseKey = 'base-1') => ({ type: 'debian' as const, archiveDate: TRUST.archiveDate, mirror: 'http://deb.debian.org/debian', suite: 'bookworm', components: ['main'], verified: true, keyring: '', packages: [], baseKey, baseSha256: 'b'.repeat(64) });

/** The keys a build would use now (a snapshot build unless release is set: HEAD then needs a tag). */
async function keysNow(state: BuildState = {}, release = false) {
  const ctx = context({}, !release);
  await runSteps([versionStep], ctx, { logger: silentLogger });
  Object.assign(ctx, { source: source(), trust: TRUST, controller: { root: '/', ansibleCore: '2.14.3' } }, state);
  const k = await cacheKeys(ctx as Parameters<typeof cacheKeys>[0]);
  return { tree: k.tree.key, disk: k.disk.key, audit: k.audit.key, qcow2: k.formats.get('qcow2')?.key, raw: k.formats.get('raw')?.key };
}

/** Changes the repository with edit, commits, and returns the keys; then puts everything back. */
async function keysAfter(edit: () => void, state: BuildState = {}) {
  edit();
  git('add', '-A');
  git('commit', '-qm', 'change', '--allow-empty');
  try {
    return await keysNow(state);
  } finally {
    git('reset', '-q', '--hard', 'release-0.1.0');
  }
}

test('each input class changes the keys it must; a new tag on the same content keeps the tree', async () => {
  const base = await keysNow();
  assert.deepEqual(await keysNow(), base, 'the same inputs give the same keys');
  const files: [string, () => void][] = [
    ['the playbook', () => appendFileSync(join(repo, 'playbook.yml'), '# edited\n')],
    ['a role task', () => writeFileSync(join(repo, 'roles/web/tasks/main.yml'), '- ansible.builtin.debug: { msg: bye }\n')],
    ['a new vars file', () => { mkdirSync(join(repo, 'group_vars'), { recursive: true }); writeFileSync(join(repo, 'group_vars/all.yml'), 'x: 1\n'); }],
    ['an inventory', () => writeFileSync(join(repo, 'inventory'), 'kiln_image\n')],
    ['ansible.cfg', () => writeFileSync(join(repo, 'ansible.cfg'), '[defaults]\nforks = 1\n')],
    ['provision.vars in kiln.yaml', () => writeFileSync(join(repo, 'kiln.yaml'), YAML.replace('hello', 'bye'))],
    ['a seal setting', () => writeFileSync(join(repo, 'kiln.yaml'), YAML.replace('vars: { greeting: hello } }', 'vars: { greeting: hello } }\nseal: { disable: [logs] }'))],
    ['a file mode', () => execFileSync('chmod', ['+x', join(repo, 'playbook.yml')])],
  ];
  for (const [what, edit] of files) {
    const k = await keysAfter(edit);
    assert.notEqual(k.tree, base.tree, `${what} changes the tree's key`);
    assert.notEqual(k.disk, base.disk, `${what} changes the disk's key`);
    assert.notEqual(k.qcow2, base.qcow2, `${what} changes each format's key`);
  }
  // Untracked but not ignored files are shown to the playbook too, so they count.
  writeFileSync(join(repo, 'notes.txt'), 'x');
  assert.notEqual((await keysNow()).tree, base.tree, 'an untracked file the sandbox would show changes the key');
  rmSync(join(repo, 'notes.txt'));
  // Inputs that are not files.
  assert.notEqual((await keysNow({ source: source('base-2') })).tree, base.tree, 'another base tree');
  assert.notEqual((await keysNow({ controller: { root: '/', ansibleCore: '2.14.4' } })).tree, base.tree, 'another Ansible');
  assert.notEqual((await keysNow({ lock: { sha256: 'c'.repeat(64) } as BuildState['lock'] })).tree, base.tree, 'kiln.lock');
  // Disk settings: the tree's key moves only because kiln.yaml is a file the playbook can read; the disk's must move.
  const disk = await keysAfter(() => writeFileSync(join(repo, 'kiln.yaml'), YAML.replace('64MiB', '96MiB')));
  assert.notEqual(disk.disk, base.disk, 'disk.size changes the disk key');
  assert.notEqual((await keysNow({ source: { ...source(), archiveDate: TRUST.archiveDate + 86400 } })).tree, base.tree, "the base's date (the playbook's SOURCE_DATE_EPOCH)");
  // A new tag on unchanged content (git wants a new commit for it, so SOURCE_DATE_EPOCH moves): same tree, new disk.
  const released = await keysNow({}, true);
  git('commit', '-q', '--allow-empty', '-m', 'release 0.1.1', '--date', '@2000000000');
  git('tag', 'release-0.1.1');
  try {
    const tagged = await keysNow({}, true);
    assert.equal(tagged.tree, released.tree, 'a new tag reuses the provisioned tree');
    assert.notEqual(tagged.disk, released.disk, 'but the stamped disk is new');
    assert.notEqual(tagged.raw, released.raw);
  } finally {
    git('tag', '-d', 'release-0.1.1');
    git('reset', '-q', '--hard', 'release-0.1.0');
  }
  // ...unless the playbook writes the version into the image.
  writeFileSync(join(repo, 'roles/web/tasks/main.yml'), '- ansible.builtin.debug: { msg: "{{ kiln_image_version }}" }\n');
  git('add', '-A');
  git('commit', '-qm', 'names the version');
  try {
    git('tag', 'release-0.2.0');
    const v20 = await keysNow({}, true);
    git('commit', '-q', '--allow-empty', '-m', 'release 0.2.1');
    git('tag', 'release-0.2.1');
    const v21 = await keysNow({}, true);
    assert.notEqual(v21.tree, v20.tree, 'a playbook that names kiln_image_version gets a tree per version');
  } finally {
    git('tag', '-d', 'release-0.2.0', 'release-0.2.1');
    git('reset', '-q', '--hard', 'release-0.1.0');
  }
});

test('a damaged entry is a miss, removed with a warning; an intact one is found; equal keys are stored once', async () => {
  const dir = join(work, 'store-cache');
  const cache = new StepCache(dir, logger);
  const src = join(work, 'payload');
  writeFileSync(src, Buffer.alloc(1 << 20, 7));
  const key = cacheKey('disk', { n: 1 });
  await cache.put('disk', key, { n: 1 }, { layout: 'x' }, [{ name: 'disk.raw', from: src }]);
  const hit = await cache.get<{ layout: string }>('disk', key);
  assert.equal(hit?.data.layout, 'x');
  assert.equal(statSync(hit!.file('disk.raw')).mode & 0o777, 0o444, 'entries are read-only');
  assert.equal(await cache.get('disk', cacheKey('disk', { n: 2 })), undefined, 'another key is a miss');
  assert.equal(await cache.get('tree', key), undefined, "a key stored by one step is not another step's entry");

  const damage: [string, (f: string) => void][] = [
    ['truncated', (f) => truncateSync(f, 1000)],
    ['one byte rewritten', (f) => { const b = readFileSync(f); b[4096] ^= 1; writeFileSync(f, b); }],
    ['replaced by another file', (f) => { rmSync(f); writeFileSync(f, Buffer.alloc(1 << 20, 8)); }],
    ['removed', (f) => rmSync(f)],
  ];
  for (const [what, hurt] of damage) {
    await cache.put('disk', key, { n: 1 }, { layout: 'x' }, [{ name: 'disk.raw', from: src }]);
    const f = join(dir, 'steps', key, 'disk.raw');
    rmSync(f);
    execFileSync('cp', [src, f]);
    // The record's fingerprint no longer matches the copy either: cp alone makes it hash, and the hash agrees.
    assert.ok(await cache.get('disk', key), `an intact copy (${what} next) is still a hit after hashing`);
    warnings.length = 0;
    hurt(f);
    assert.equal(await cache.get('disk', key), undefined, `${what}: a miss`);
    assert.equal(existsSync(join(dir, 'steps', key)), false, `${what}: the entry is removed`);
    assert.match(warnings.join('\n'), /is damaged .*building it again/);
  }
  await cache.put('disk', key, { n: 1 }, { layout: 'x' }, [{ name: 'disk.raw', from: src }]);
  writeFileSync(join(dir, 'steps', key, 'entry.json'), JSON.stringify({ kiln: 1, step: 'disk', key: cacheKey('disk', { n: 9 }), files: [] }));
  assert.equal(await cache.get('disk', key), undefined, 'a record for another key is a miss');

  // A same-size rewrite with the mtime set back is not seen by the cheap check, but `kiln cache verify` hashes it.
  await cache.put('disk', key, { n: 1 }, { layout: 'x' }, [{ name: 'disk.raw', from: src }]);
  const f = join(dir, 'steps', key, 'disk.raw');
  const st = statSync(f);
  const b = readFileSync(f); b[0] ^= 1; writeFileSync(f, b);
  utimesSync(f, st.atime, st.mtime);
  const v = await cache.verify();
  assert.deepEqual(v.removed, [key]);
  // Temporaries of a dead build are removed; a put never leaves one.
  mkdirSync(join(dir, 'steps', `${key}.999999.tmp`), { recursive: true });
  await cache.put('disk', cacheKey('disk', { n: 3 }), {}, null);
  assert.deepEqual(readdirSync(join(dir, 'steps')).filter((n) => n.endsWith('.tmp')), []);
});

test('the cache is bounded: prune removes the least recently used entries first', async () => {
  const cache = new StepCache(join(work, 'prune-cache'), logger);
  const keys: string[] = [];
  for (let i = 0; i < 3; i++) {
    const f = join(work, `p${i}`);
    writeFileSync(f, Buffer.alloc(256 * 1024, i + 1));
    const k = cacheKey('format:raw', { i });
    keys.push(k);
    await cache.put('format:raw', k, { i }, null, [{ name: 'artifact', from: f }]);
    rmSync(f);
    // Distinct last-use times, oldest first.
    const when = new Date(Date.now() - (10 - i) * 60_000);
    utimesSync(join(cache.dir, k, 'used'), when, when);
  }
  await cache.get('format:raw', keys[0]); // now the most recently used
  const total = cache.list().reduce((s, e) => s + e.bytes, 0);
  const r = cache.prune(total - 1);
  assert.deepEqual(r.removed.map((e) => e.key), [keys[1]], 'the least recently used entry goes first');
  assert.deepEqual(cache.list().map((e) => e.key).sort(), [keys[0], keys[2]].sort());
  cache.prune(0);
  assert.deepEqual(cache.list(), []);
});

/** A tree with what the seal and stamp steps read. */
function smallTree(root: string): void {
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'var/lib/dpkg'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n');
  writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  writeFileSync(join(root, 'var/lib/dpkg/status'), 'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\nDescription: x\n\n');
}

const treeListing = (root: string) => execFileSync('bash', ['-c', `cd '${root}' && find . -printf '%p %y %m %U:%G %s %T@\\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum`], { encoding: 'utf8' });

test('the steps use the cache: a cached tree is unpacked instead of provisioned; cached formats are the same bytes, linked not written', async () => {
  const baseDir = join(work, 'base-tree');
  smallTree(baseDir);
  execFileSync('tar', ['-cf', join(work, 'base.tar'), '-C', baseDir, '.']);
  let provisioned = 0;
  // Stands in for provision (no Ansible here): writes a file and records the run.
  const fakeProvision = step({
    name: 'provision', describe: 'writes one file', needs: ['source'], uses: ['cache'], provides: ['provision'],
    async run(ctx) {
      if (ctx.cache?.tree) return provisionStep.run(ctx, { status() {}, log() {} }, new AbortController().signal);
      provisioned++;
      writeFileSync(join(ctx.root, 'etc/app.conf'), 'port=8080\n');
      ctx.provision = { tasks: [], totals: { ok: 1, changed: 1, failures: 0, unreachable: 0, skipped: 0, rescued: 0, ignored: 0 } };
    },
  });
  const steps: BuildStep[] = [cacheStep, configureStep, fakeProvision, sealStep];
  const given: (keyof BuildState)[] = ['version', 'source', 'trust', 'base', 'controller'];
  const first = context();
  await runSteps([versionStep], first, { logger: silentLogger });
  Object.assign(first, { source: source(), trust: TRUST, base: { tar: join(work, 'base.tar') }, controller: { root: '/', ansibleCore: '2.14.3' } });
  checkPlan(steps, given);
  await runSteps(steps, first, { logger: silentLogger });
  assert.equal(provisioned, 1);
  assert.equal(first.cache?.tree, undefined, 'the first build found nothing');
  const fresh = treeListing(first.root);

  const second = context();
  await runSteps([versionStep], second, { logger: silentLogger });
  Object.assign(second, { source: source(), trust: TRUST, base: { tar: join(work, 'base.tar') }, controller: { root: '/', ansibleCore: '2.14.3' } });
  await runSteps(steps, second, { logger: silentLogger });
  assert.equal(provisioned, 1, 'the second build did not provision');
  assert.ok(second.cache?.tree, 'it found the sealed tree');
  assert.deepEqual(second.provision, first.provision, "the cached tree carries provision's record");
  assert.deepEqual(second.seal, first.seal, "and seal's report");
  assert.equal(statSync(join(first.root, 'etc/app.conf')).mtimeMs / 1000, BUILD_WRITTEN_MTIME, "what the build wrote carries the build's mark, not the clock's time");
  assert.equal(treeListing(second.root), fresh, 'the unpacked tree is the tree the first build sealed: names, types, modes, owners, sizes, times, contents');

  // Formats: written once, then linked from the cache with the same digests.
  const clean = join(work, 'clean-tree');
  smallTree(clean);
  buildDisk(clean, join(work, 'clean.raw'));
  const formats = async () => {
    const ctx = context();
    await runSteps([versionStep], ctx, { logger: silentLogger });
    Object.assign(ctx, { source: source(), trust: TRUST, controller: { root: '/', ansibleCore: '2.14.3' } });
    await runSteps([cacheStep], ctx, { logger: silentLogger });
    ctx.disk = { raw: join(work, 'clean.raw'), layout: {} as never };
    await runSteps([formatsStep], ctx, { logger: silentLogger });
    return ctx;
  };
  const a = await formats();
  assert.equal(a.cache?.formats.size, 0);
  const b = await formats();
  assert.deepEqual([...(b.cache?.formats.keys() ?? [])], ['raw', 'qcow2'], 'both formats were found');
  assert.deepEqual(b.artifacts?.map((x) => [x.format, x.sha256, x.size]), a.artifacts?.map((x) => [x.format, x.sha256, x.size]));
  const q = b.artifacts!.find((x) => x.format === 'qcow2')!;
  assert.equal(execFileSync('sha256sum', [q.file], { encoding: 'utf8' }).split(' ')[0], q.sha256, 'the linked file is the bytes its digest says');
  assert.equal(statSync(q.file).ino, statSync(b.cache!.formats.get('qcow2')!.file('artifact')).ino, 'linked, not copied');
  // A damaged qcow2 entry is written again, not used.
  const entry = b.cache!.formats.get('qcow2')!.file('artifact');
  appendFileSync(entry, 'x');
  warnings.length = 0;
  const c = await formats();
  assert.deepEqual([...(c.cache?.formats.keys() ?? [])], ['raw']);
  assert.match(warnings.join('\n'), /cached format:qcow2 output .* is damaged/);
  assert.equal(c.artifacts?.find((x) => x.format === 'qcow2')?.sha256, q.sha256, 'written again: the same bytes');
  for (const ctx of [first, second, a, b, c]) rmSync(ctx.workDir, { recursive: true, force: true });
});

test('--no-cache: the cache step does not run, nothing is read or stored', async () => {
  const ctx = newContext(loadTemplate(join(repo, 'kiln.yaml')), { snapshot: false, onError: 'cleanup', cacheDir: join(work, 'nocache'), noCache: true }, silentLogger);
  await runSteps([versionStep], ctx, { logger: silentLogger });
  Object.assign(ctx, { source: source(), trust: TRUST, controller: { root: '/', ansibleCore: '2.14.3' } });
  const r = await runSteps([cacheStep], ctx, { logger: silentLogger });
  assert.equal(r.steps[0].status, 'skipped');
  assert.equal(ctx.cache, undefined);
  assert.equal(existsSync(join(work, 'nocache', 'steps')), false);
});
