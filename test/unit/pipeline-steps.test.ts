/**
 * The build's steps one at a time, each run through the step runner with its declaration checked,
 * on small trees and disks made here: no mmdebstrap, no Ansible, no image build. The steps that run
 * those (lock, source, tools, provision, disk) are tested with fake drivers in pipeline-drivers.test.ts.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KilnError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { step, type BuildContext, type BuildState, type BuildStep } from '../../src/pipeline/context.js';
import { runSteps } from '../../src/pipeline/runner.js';
import { auditStep, configureStep, formatsStep, outputsStep, preflightStep, releaseStep, sealStep, stampStep, versionStep, workAreaStep } from '../../src/pipeline/steps/index.js';
import { openStore } from '../../src/store/index.js';
import { runChecked as run, templateRepo, type TemplateRepo } from './pipeline-fixture.js';
import { buildDisk, buildFixture } from './seal-fixture.js';

const work = mkdtempSync(join(tmpdir(), 'kiln-steps-test-'));
const repo = join(work, 'repo');
after(() => rmSync(work, { recursive: true, force: true }));

let template: TemplateRepo;
before(() => {
  template = templateRepo(repo, {
    'kiln.yaml': [
      'name: web',
      'source: { debian: { suite: bookworm } }',
      'provision: { playbook: playbook.yml }',
      'disk: { size: 64MiB, hostname: stepped }',
      'formats: [raw, qcow2]',
      'release: { store: ./store }',
      '',
    ].join('\n'),
    'playbook.yml': '- hosts: all\n  tasks: []\n',
    '.gitignore': '.kiln/\nstore/\n',
  });
});

const git = (...args: string[]) => template.git(...args);
const context = (state: BuildState = {}, options: Partial<BuildContext['options']> = {}): BuildContext => template.context(state, options);

/** A tree with what the stamp and seal steps read: os-release and a one-package dpkg database. */
function smallTree(root: string): void {
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'var/lib/dpkg'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n');
  writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  writeFileSync(join(root, 'var/lib/dpkg/status'), 'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\nDescription: x\n\n');
}

test('version, preflight and work-area: the tag is the version, an unreleased version passes, the work area exists and is removed on failure', async () => {
  const ctx = context();
  let during = false;
  const probe = step({ name: 'probe', describe: 'looks at the work area', async run(c) { during = existsSync(c.stagingDir) && existsSync(c.root); } });
  await run([versionStep, preflightStep, workAreaStep, probe], ctx);
  assert.equal(ctx.version?.version, 'release-0.1.0');
  assert.equal(ctx.version?.commit, git('rev-parse', 'HEAD'));
  assert.ok(during, 'the work area existed while the steps ran');
  assert.equal(existsSync(ctx.workDir), false, 'and is removed when the build ends');
  const failing = context();
  const boom = { ...stampStep, name: 'boom', async run() { throw new KilnError('boom'); } } as BuildStep;
  await assert.rejects(runSteps([versionStep, workAreaStep, boom], failing, { logger: silentLogger }), /boom/);
  assert.equal(existsSync(failing.workDir), false, "work-area's cleanup removed the scratch");
  const snapshot = context({}, { snapshot: true });
  await run([versionStep, preflightStep], snapshot);
  assert.match(snapshot.version?.version ?? '', /^snapshot-[0-9a-f]{12}$/);
});

test("configure, seal and stamp on a small tree: Kiln's layer, the seal's report, the version stamp and the package list", async () => {
  const ctx = context();
  await run([versionStep], ctx);
  // The base tree as the source step hands it on: a tarball, unpacked by configure.
  const base = join(work, 'base-tree');
  smallTree(base);
  execFileSync('tar', ['-cf', join(work, 'base.tar'), '-C', base, '.']);
  ctx.base = { tar: join(work, 'base.tar') };
  ctx.source = { type: 'debian', mirror: 'http://deb.debian.org/debian', suite: 'bookworm', components: ['main'], verified: true, keyring: '', packages: [], baseKey: 'k' };
  ctx.provision = { tasks: [], totals: { ok: 0, changed: 0, failures: 0, unreachable: 0, skipped: 0, rescued: 0, ignored: 0 } };
  await run([configureStep, sealStep, stampStep], ctx, ['version', 'source', 'base', 'provision']);
  assert.equal(readFileSync(join(ctx.root, 'etc/hostname'), 'utf8'), 'stepped\n');
  assert.equal(readFileSync(join(ctx.root, 'etc/machine-id'), 'utf8'), '', 'the seal emptied the machine-id');
  assert.ok(ctx.seal?.operations.some((o) => o.name === 'machine-id' && o.changed.length === 1));
  assert.match(readFileSync(join(ctx.root, 'etc/release'), 'utf8'), /^IMAGE_VERSION=release-0\.1\.0$/m);
  assert.deepEqual(ctx.packages, [{ name: 'base-files', version: '12.4+deb12u5', arch: 'amd64' }]);
  rmSync(ctx.workDir, { recursive: true, force: true });
});

test('audit, formats, release and outputs on a small disk: findings fail the build; a clean disk becomes artifacts, a release and outputs', async () => {
  // The fixture disk holds one planted problem of each kind: the audit step names them all and fails.
  const planted = buildFixture(join(work, 'dirty-tree')).planted;
  buildDisk(join(work, 'dirty-tree'), join(work, 'dirty.raw'));
  const dirty = context();
  await run([versionStep], dirty);
  dirty.disk = { raw: join(work, 'dirty.raw'), layout: {} as never };
  await assert.rejects(runSteps([auditStep], dirty, { logger: silentLogger }), (e: unknown) => e instanceof KilnError && new RegExp(`the audit found ${planted.length} problem`).test(e.message));
  rmSync(dirty.workDir, { recursive: true, force: true });

  const clean = join(work, 'clean-tree');
  smallTree(clean);
  writeFileSync(join(clean, 'etc/machine-id'), '');
  writeFileSync(join(clean, 'etc/hostname'), 'stepped\n');
  buildDisk(clean, join(work, 'clean.raw'));
  const ctx = context();
  await run([versionStep], ctx);
  mkdirSync(ctx.stagingDir, { recursive: true });
  ctx.disk = { raw: join(work, 'clean.raw'), layout: {} as never };
  ctx.packages = [{ name: 'base-files', version: '12.4+deb12u5', arch: 'amd64' }];
  ctx.controller = { root: '/', ansibleCore: '2.14.3' };
  ctx.source = { type: 'debian', mirror: 'http://deb.debian.org/debian', suite: 'bookworm', components: ['main'], verified: true, keyring: '', packages: [], baseKey: 'k' };
  await run([auditStep, formatsStep, releaseStep, outputsStep], ctx, ['version', 'disk', 'source', 'packages', 'controller']);
  assert.deepEqual(ctx.findings, []);
  assert.deepEqual(ctx.artifacts?.map((a) => [a.format, a.mediaType]), [['raw', 'application/vnd.kiln.disk.raw'], ['qcow2', 'application/vnd.kiln.disk.qcow2']]);
  assert.equal(ctx.release?.ref, 'web@release-0.1.0');
  // A release to a local store: the formats step staged each artifact in the store as it was written; the release step only moved them.
  assert.deepEqual([...(ctx.staged?.blobs.keys() ?? [])].sort(), ['qcow2', 'raw']);
  for (const b of ctx.staged?.blobs.values() ?? []) assert.equal(existsSync(b.path), false, `${b.path} was moved into the store`);
  const store = await openStore(join(repo, 'store'), repo);
  const r = await store.resolve('web@release-0.1.0', { format: 'qcow2' });
  assert.equal(r.artifact?.sha256, ctx.artifacts?.[1].sha256);
  assert.equal(ctx.outDir, join(repo, '.kiln', 'out', 'web-release-0.1.0'));
  for (const a of ctx.artifacts ?? []) assert.ok(a.file.startsWith(`${ctx.outDir}/`) && existsSync(a.file), `${a.file} is in the out directory`);
  // The version is released now: preflight refuses to build it again.
  await assert.rejects(run([versionStep, preflightStep], context()), /already released .* never rebuilt in place/);
  rmSync(ctx.workDir, { recursive: true, force: true });
});
