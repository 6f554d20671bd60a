/**
 * The steps that run host tools (lock, source, tools, provision, disk), each run through the step
 * runner with fake drivers (src/pipeline/drivers.ts): a hand-written mock in the manner of Packer's
 * driver_mock.go that records what each step passes to its tools and answers with results made here.
 * No mmdebstrap, gpgv, Ansible, sandbox or disk tools run; the end-to-end tests run the real ones.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import type { DiskLayout } from '../../src/disk/index.js';
import { KilnError } from '../../src/errors.js';
import type { ExecResult } from '../../src/exec.js';
import { formatLock, LOCK_FORMAT, LOCK_FORMAT_UPSTREAM, packageSetDigest, type LockArchive, type LockedPackage, type LockFile, type ArchiveLockFile } from '../../src/lock/file.js';
import type { LockedRepo } from '../../src/lock/repo.js';
import type { ProvisionBox, Drivers } from '../../src/pipeline/drivers.js';
import { step, type BuildContext, type BuildState, type BuildStep } from '../../src/pipeline/context.js';
import { diskStep, lockStep, provisionStep, sourceStep, toolsStep, versionStep, workAreaStep } from '../../src/pipeline/steps/index.js';
import type { HostStats, TaskResult, TaskStatus } from '../../src/provision/results.js';
import type { PlaybookOutcome } from '../../src/provision/run.js';
import { describeController, type Controller, type ToolsTree } from '../../src/sandbox/tools.js';
import type { ArchiveTrust, InstalledPackage, DebianSourceRecord } from '../../src/source/debian.js';
import { COMMIT_EPOCH, runChecked, templateRepo, type TemplateRepo } from './pipeline-fixture.js';

// ---------------------------------------------------------------------------------------------
// The fake drivers

/** One recorded call: which driver, and the arguments the step passed it. */
interface DriverCall { name: keyof Drivers; args: unknown[] }

/** A driver that records its calls, then answers with impl; without one, the call fails the step. */
function recorded<A extends unknown[], R>(name: keyof Drivers, impl: ((...args: A) => R) | undefined, log: DriverCall[]): (...args: A) => R {
  return (...args: A): R => {
    log.push({ name, args });
    // A step that starts running a tool its test did not expect is a failure, not a silent no-op.
    if (!impl) throw new Error(`the step called drivers.${name}, which this test gives no fake for`);
    return impl(...args);
  };
}

/** The drivers a test hands a step: every one listed, so a new driver must be added here too. */
class FakeDrivers {
  readonly log: DriverCall[] = [];
  readonly drivers: Drivers;

  constructor(impl: Partial<Drivers>) {
    const log = this.log;
    this.drivers = {
      verifyLockedSet: recorded('verifyLockedSet', impl.verifyLockedSet, log),
      fetchLockedDebs: recorded('fetchLockedDebs', impl.fetchLockedDebs, log),
      lockedPackagesIndex: recorded('lockedPackagesIndex', impl.lockedPackagesIndex, log),
      serveLockedRepo: recorded('serveLockedRepo', impl.serveLockedRepo, log),
      verifyArchive: recorded('verifyArchive', impl.verifyArchive, log),
      baseTarball: recorded('baseTarball', impl.baseTarball, log),
      basePackagesOfTar: recorded('basePackagesOfTar', impl.basePackagesOfTar, log),
      fetchVerifiedImage: recorded('fetchVerifiedImage', impl.fetchVerifiedImage, log),
      imageBaseTarball: recorded('imageBaseTarball', impl.imageBaseTarball, log),
      resolveParent: recorded('resolveParent', impl.resolveParent, log),
      controllerFor: recorded('controllerFor', impl.controllerFor, log),
      hostController: recorded('hostController', impl.hostController, log),
      repositoryFiles: recorded('repositoryFiles', impl.repositoryFiles, log),
      openProvisionSandbox: recorded('openProvisionSandbox', impl.openProvisionSandbox, log),
      installedPackages: recorded('installedPackages', impl.installedPackages, log),
      extractTree: recorded('extractTree', impl.extractTree, log),
      assembleDisk: recorded('assembleDisk', impl.assembleDisk, log),
    };
  }

  /** The drivers called, in order. */
  names(): (keyof Drivers)[] {
    return this.log.map((c) => c.name);
  }

  /** The arguments of each call of one driver, in order. */
  calls<K extends keyof Drivers>(name: K): Parameters<Drivers[K]>[] {
    return this.log.filter((c) => c.name === name).map((c) => c.args as Parameters<Drivers[K]>);
  }

  /** The arguments of the one call of a driver (failing when it was called another number of times). */
  only<K extends keyof Drivers>(name: K): Parameters<Drivers[K]> {
    const calls = this.calls(name);
    assert.equal(calls.length, 1, `drivers.${name} was called once`);
    return calls[0];
  }
}

/** The build sandbox as the provision step sees it: records what it is asked, answers each playbook run in turn. */
class FakeBox implements ProvisionBox {
  readonly events: string[] = [];
  readonly runs: Parameters<ProvisionBox['provision']>[0][] = [];
  constructor(private readonly outcomes: PlaybookOutcome[]) {}

  async syntaxCheck(playbook: string, cwd: string): Promise<void> {
    this.events.push(`syntax-check ${playbook} in ${cwd}`);
  }

  async runInImage(cmd: string[]): Promise<ExecResult> {
    this.events.push(cmd.join(' '));
    return { code: 0, signal: null, stdout: '', stderr: '' };
  }

  async provision(o: Parameters<ProvisionBox['provision']>[0]): Promise<PlaybookOutcome> {
    this.runs.push(o);
    this.events.push('ansible-playbook');
    const outcome = this.outcomes[this.runs.length - 1];
    if (!outcome) throw new Error(`the playbook ran ${this.runs.length} times; the test expected ${this.outcomes.length}`);
    return outcome;
  }

  async stop(): Promise<void> {
    this.events.push('stop');
  }
}

// ---------------------------------------------------------------------------------------------
// What the fakes answer with

const MIRROR = 'http://deb.debian.org/debian';
const hex = (s: string) => createHash('sha256').update(s).digest('hex');

const deb = (name: string, version: string, architecture = 'amd64'): LockedPackage => ({
  name, version, architecture, sha256: hex(`${name} ${version}`), size: 1000 + name.length, filename: `pool/main/${name[0]}/${name}/${name}_${version}_${architecture}.deb`,
});
const installed = (ps: LockedPackage[]): InstalledPackage[] => ps.map((p) => ({ name: p.name, version: p.version, arch: p.architecture }));

const archive = (suite: string, mirror: string, date: number, inRelease: string): LockArchive => ({
  mirror, suite, components: ['main'], date, inRelease, signedBy: 'A7236886F3CCCAAD148A27F80E98404D386FA1D9', verified: true,
  indexes: [{ path: 'main/binary-amd64/Packages', sha256: hex(`${suite} Packages`), size: 4096 }],
});

/** kiln.lock of the locked template: the image's set, and a tools tree from another mirror. */
const LOCK: ArchiveLockFile = {
  lock: LOCK_FORMAT, image: 'web',
  archive: archive('bookworm', MIRROR, 1_700_000_000, hex('bookworm InRelease')),
  packages: [deb('base-files', '12.4+deb12u5'), deb('nginx', '1.22.1-9')],
  tools: {
    archive: archive('trixie', 'http://mirror.example/debian', 1_700_100_000, hex('trixie InRelease')),
    packages: [deb('ansible-core', '2.19.0-1', 'all'), deb('mount', '2.41-5')],
  },
};
const TOOLS_PINS = LOCK.tools ?? assert.fail('LOCK pins a tools tree');

// What the chain check of each set found: dates unlike the lock's text, so a test sees which one a step used.
const IMAGE_TRUST: ArchiveTrust = { verified: true, inReleaseSha256: LOCK.archive.inRelease, archiveDate: 1_700_000_500, signingKeyFingerprint: LOCK.archive.signedBy };
const TOOLS_TRUST: ArchiveTrust = { verified: true, inReleaseSha256: TOOLS_PINS.archive.inRelease, archiveDate: 1_700_100_500, signingKeyFingerprint: TOOLS_PINS.archive.signedBy };
/** What verifying the live archive found (an unlocked build). */
const LIVE_TRUST: ArchiveTrust = { verified: true, inReleaseSha256: hex('live InRelease'), archiveDate: 1_710_000_000, signingKeyFingerprint: 'B8B80B5B623EAB6AD8775C45B7C75DA19EBEC34F', keyringSha256: hex('keyring') };

const totals = (results: TaskResult[]): HostStats => ({
  ok: results.filter((r) => r.status === 'ok' || r.status === 'changed').length, changed: results.filter((r) => r.status === 'changed').length,
  failures: 0, unreachable: 0, skipped: results.filter((r) => r.status === 'skipped').length, rescued: 0, ignored: 0,
});
const task = (name: string, status: TaskStatus, extra: Partial<TaskResult> = {}): TaskResult => ({ play: 'web', task: name, host: 'image', action: 'ansible.builtin.copy', status, ...extra });
const outcome = (...results: TaskResult[]): PlaybookOutcome => ({ results, stats: { image: totals(results) }, totals: totals(results), code: 0 });

const toolsTree = (packages: InstalledPackage[]): ToolsTree => ({ root: '/cache/tools/t', key: hex('tools'), suite: 'trixie', cached: false, trust: TOOLS_TRUST, packages });

/** The fakes of the lock step's four drivers; `closed` lists the repositories closed, by directory. */
function lockFakes(): { impl: Partial<Drivers>; closed: string[] } {
  const closed: string[] = [];
  const repo = (dir: string): LockedRepo => {
    // Each repository its own port, so a test sees which one a step was given.
    const url = `http://127.0.0.1:${dir.endsWith('locked-tools-repo') ? 41001 : 41000}/`;
    return { url, sourcesLine: `deb [trusted=yes] ${url} ./`, dir, debsDir: join(dir, 'debs'), close: async () => { closed.push(dir); } };
  };
  return {
    closed,
    impl: {
      verifyLockedSet: async (_set, o) => (o.tools ? TOOLS_TRUST : IMAGE_TRUST),
      fetchLockedDebs: async () => ({ cached: 1, reused: 0, fromMirror: 1, fromSnapshot: [] }),
      lockedPackagesIndex: async (set) => `Packages of ${set.archive.suite}\n`,
      serveLockedRepo: async (_set, _cacheDir, _packages, dir) => repo(dir),
    },
  };
}
const LOCK_CALLS: (keyof Drivers)[] = ['verifyLockedSet', 'verifyLockedSet', 'fetchLockedDebs', 'lockedPackagesIndex', 'serveLockedRepo'];

// ---------------------------------------------------------------------------------------------
// The templates

const work = mkdtempSync(join(tmpdir(), 'kiln-drivers-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

const FILES = {
  'kiln.yaml': [
    'name: web',
    'source: { debian: { suite: bookworm, snapshot: "https://snapshot.debian.org/archive/debian/20240101T000000Z/" } }',
    'provision: { playbook: playbook.yml, vars: { greeting: hello }, host_ports: [8080] }',
    'disk: { size: 64MiB, hostname: driven, kernel_cmdline: "console=ttyS0" }',
    'formats: [raw]',
    'release: { store: ./store, sign: { ssh_key: keys/release-signing } }',
    '',
  ].join('\n'),
  'playbook.yml': '- hosts: all\n  tasks: []\n',
  'keys/release-signing': 'not a key: only its path matters here\n',
  '.gitignore': '.kiln/\nstore/\n',
};

/** Without kiln.lock; with it; with a kiln.lock written for another suite than kiln.yaml's. */
let plain: TemplateRepo;
let locked: TemplateRepo;
let drifted: TemplateRepo;
before(() => {
  plain = templateRepo(join(work, 'plain'), FILES);
  locked = templateRepo(join(work, 'locked'), { ...FILES, 'kiln.lock': formatLock(LOCK) });
  drifted = templateRepo(join(work, 'drifted'), { ...FILES, 'kiln.lock': formatLock({ ...LOCK, archive: { ...LOCK.archive, suite: 'trixie' } }) });
});

/** A context over a template with the fake drivers, its own empty cache (never KILN_CACHE_DIR's), and earlier steps' results. */
function context(t: TemplateRepo, fake: FakeDrivers, state: BuildState = {}, options: Partial<BuildContext['options']> = {}): BuildContext {
  return t.context(state, { cacheDir: join(work, 'cache', basename(t.dir)), ...options }, fake.drivers);
}

const SOURCE: DebianSourceRecord = { type: 'debian', mirror: MIRROR, suite: 'bookworm', components: ['main'], verified: true, keyring: '', packages: [], baseKey: 'k' };
const CONTROLLER: Controller = { root: '/cache/tools/t', ansibleCore: '2.19.0-1', tools: toolsTree(installed(TOOLS_PINS.packages)) };

/** A StepFailure (a KilnError located at the step) whose message matches. */
const failsAt = (step: string, message: RegExp) => (e: unknown) => {
  assert.ok(e instanceof KilnError, `a KilnError, not ${String(e)}`);
  assert.match(e.message, message);
  assert.equal(e.where.step, step);
  return true;
};

// ---------------------------------------------------------------------------------------------
// lock

test('lock: verifies both sets of kiln.lock, fetches and serves the locked .debs, and keeps what the chain check found', async () => {
  const { impl, closed } = lockFakes();
  const fake = new FakeDrivers(impl);
  const ctx = context(locked, fake);
  await runChecked([lockStep], ctx);
  const file = join(locked.dir, 'kiln.lock');
  assert.deepEqual(fake.names(), LOCK_CALLS);
  const [image, tools] = fake.calls('verifyLockedSet');
  assert.deepEqual(image[0].archive, LOCK.archive, "the image's set first");
  assert.equal(image[1].lockFile, file);
  assert.equal(image[1].tools, undefined);
  assert.deepEqual(tools[0], TOOLS_PINS, "then the tools tree's pins");
  assert.equal(tools[1].tools, true, 'marked as the tools set (its errors name tools.archive)');
  const [set, fetch] = fake.only('fetchLockedDebs');
  assert.deepEqual(set.packages, LOCK.packages);
  assert.deepEqual([fetch.mirror, fetch.snapshot, fetch.cacheDir], [MIRROR, 'https://snapshot.debian.org/archive/debian/20240101T000000Z/', ctx.cacheDir], "kiln.yaml's mirror and snapshot mirror");
  const [, , packages, dir] = fake.only('serveLockedRepo');
  assert.equal(packages, 'Packages of bookworm\n', 'the repository serves the index lockedPackagesIndex made');
  assert.equal(dir, join(ctx.workDir, 'locked-repo'));

  assert.equal(ctx.lock?.file, file);
  assert.equal(ctx.lock?.sha256, hex(readFileSync(file, 'utf8')), "kiln.lock's digest, recorded in the source record");
  assert.equal(ctx.lock?.archive?.trust, IMAGE_TRUST, 'the trust the chain check found, not the lock text');
  assert.equal(ctx.lock?.toolsTrust, TOOLS_TRUST);
  assert.equal(ctx.lock?.archive?.repo.dir, dir);
  assert.deepEqual(closed, [dir], "the lock step's cleanup closed the repository when the build ended");

  const ignored = new FakeDrivers(impl);
  const r = context(locked, ignored, {}, { lock: 'ignore' });
  await runChecked([lockStep], r);
  assert.deepEqual([ignored.names(), r.lock], [[], undefined], '`kiln lock` ignores kiln.lock: the step is skipped');
  const none = new FakeDrivers(impl);
  await runChecked([lockStep], context(plain, none));
  assert.deepEqual(none.names(), [], 'without kiln.lock the step is skipped');
});

test('lock: a kiln.lock for another suite than kiln.yaml builds is an error at the lock file, before anything is verified or fetched', async () => {
  const fake = new FakeDrivers(lockFakes().impl);
  const ctx = context(drifted, fake);
  await assert.rejects(runChecked([lockStep], ctx), (e: unknown) => {
    failsAt('lock', /kiln\.lock was written for trixie, but kiln\.yaml builds bookworm/)(e);
    assert.ok(e instanceof KilnError);
    assert.equal(e.where.file, join(drifted.dir, 'kiln.lock'));
    assert.match(e.hint ?? '', /kiln lock --update/);
    return true;
  });
  assert.deepEqual(fake.names(), []);
  assert.equal(ctx.lock, undefined);
});

// ---------------------------------------------------------------------------------------------
// source

const BASE = { tar: '/cache/base/k.tar', key: hex('base key'), cached: false, sha256: hex('base tar') };
const BASE_PACKAGES: InstalledPackage[] = [{ name: 'base-files', version: '12.4+deb12u5', arch: 'amd64' }];
const sourceFakes: Partial<Drivers> = {
  verifyArchive: async () => LIVE_TRUST,
  baseTarball: async () => BASE,
  basePackagesOfTar: async () => BASE_PACKAGES,
};

test('source: verifies the live archive, builds the base from what it verified, and records both', async () => {
  const fake = new FakeDrivers(sourceFakes);
  const ctx = context(plain, fake);
  await runChecked([sourceStep], ctx);
  assert.deepEqual(fake.names(), ['verifyArchive', 'baseTarball', 'basePackagesOfTar']);
  const [debian, workDir] = fake.only('verifyArchive');
  assert.equal(debian, ctx.template.config.source.debian);
  assert.equal(workDir, ctx.workDir);
  const [d, trust, cacheDir, baseWork, , , lockedBase] = fake.only('baseTarball');
  assert.equal(d, ctx.template.config.source.debian);
  assert.equal(trust, LIVE_TRUST, 'the base is built from the InRelease that was verified');
  assert.deepEqual([cacheDir, baseWork, lockedBase], [ctx.cacheDir, ctx.workDir, undefined], 'from the mirror: no locked repository');
  assert.deepEqual(fake.only('basePackagesOfTar'), [BASE.tar, join(ctx.workDir, 'base-dpkg')]);

  assert.equal(ctx.trust, LIVE_TRUST);
  assert.deepEqual(ctx.base, { tar: BASE.tar });
  assert.deepEqual(ctx.source, {
    type: 'debian', mirror: MIRROR, suite: 'bookworm', components: ['main'], verified: true,
    inReleaseSha256: LIVE_TRUST.inReleaseSha256, archiveDate: LIVE_TRUST.archiveDate, signingKeyFingerprint: LIVE_TRUST.signingKeyFingerprint,
    keyring: '/usr/share/keyrings/debian-archive-keyring.gpg', keyringSha256: LIVE_TRUST.keyringSha256,
    packages: BASE_PACKAGES, baseKey: BASE.key, baseSha256: BASE.sha256,
  }, 'no lockSha256: the build used no lock');
});

test("source: a locked build trusts the lock step's verified set, never the live archive, and installs from the locked repository", async () => {
  const fake = new FakeDrivers({ ...lockFakes().impl, ...sourceFakes });
  const ctx = context(locked, fake);
  await runChecked([lockStep, sourceStep], ctx);
  assert.deepEqual(fake.names(), [...LOCK_CALLS, 'baseTarball', 'basePackagesOfTar'], 'no verifyArchive');
  const [, trust, , , , , lockedBase] = fake.only('baseTarball');
  assert.equal(trust, IMAGE_TRUST);
  assert.deepEqual(lockedBase, {
    sourcesLine: ctx.lock?.archive?.repo.sourcesLine, packageSet: packageSetDigest(LOCK),
    sourceDateEpoch: IMAGE_TRUST.archiveDate,
  }, "the locked repository, the set's digest and the verified archive date (not the lock text's)");
  assert.equal(ctx.trust, IMAGE_TRUST);
  assert.equal(ctx.source?.type, 'debian');
  assert.equal(ctx.source?.type === 'debian' && ctx.source.archiveDate, IMAGE_TRUST.archiveDate);
  assert.equal(ctx.source?.type === 'debian' && ctx.source.lockSha256, ctx.lock?.sha256, "the record names kiln.lock's digest");
});

// ---------------------------------------------------------------------------------------------
// kiln.lock of an upstream (a vendor image, a parent release): the lock step pins, the source step checks

const VENDOR_URL = 'https://vendor.example/debian-13-genericcloud-amd64.qcow2';
const IMAGE_PIN = { url: VENDOR_URL, sha256: hex('vendor image'), sha512: createHash('sha512').update('vendor image').digest('hex'), size: 3 * 2 ** 30 };
const PARENT_PIN = { ref: 'base@stable', name: 'base', version: 'release-1.0.0', digest: `sha256:${hex('base release')}` };
const imageYaml = (url: string) => FILES['kiln.yaml'].replace(/^source: .*$/m, `source: { image: { url: "${url}", sha512: "${IMAGE_PIN.sha512}" } }`);
const releaseYaml = (ref: string) => FILES['kiln.yaml'].replace(/^source: .*$/m, `source: { release: { ref: "${ref}", store: ./parents } }`);
const LAYOUT = { diskGuid: 'D', partitions: [], rootFsUuid: 'U', rootLabel: '', sizeBytes: 3 * 2 ** 30, detail: 'qcow2' } as never;
const upstreamFakes: Partial<Drivers> = {
  fetchVerifiedImage: async (r) => ({ ...IMAGE_PIN, verified: true, checks: ['sha512 pinned in kiln.yaml', ...(r.locked ? ['sha256 pinned in kiln.lock', 'sha512 pinned in kiln.lock'] : [])], file: '/cache/images/x.img', cached: true }),
  resolveParent: async (_c, _d, _cache, _l, _s, pinned) => ({
    image: { file: '/cache/images/p.img', url: 'kiln-release:base@release-1.0.0', sha256: hex('parent raw'), cached: true, checks: ['sha256 of its raw'] },
    parent: { name: 'base', version: pinned?.version ?? 'release-1.1.0', digest: pinned?.digest ?? `sha256:${hex('newer')}`, channel: 'stable' },
    ancestry: ['base@release-1.0.0'], artifact: { format: 'raw', sha256: hex('parent raw'), size: 1 }, signers: [], sourceDateEpoch: 1_700_000_000, store: '/parents',
  }),
  imageBaseTarball: async () => ({ ...BASE, layout: LAYOUT, date: 1_700_000_000 }),
  basePackagesOfTar: async () => BASE_PACKAGES,
};

test('an upstream lock: kiln.lock\'s sha256 and sha512 are checks of the vendor image; no archive set is verified, fetched or served', async () => {
  const lock: LockFile = { lock: LOCK_FORMAT_UPSTREAM, image: 'web', upstream: { image: IMAGE_PIN } };
  const t = templateRepo(join(work, 'image-locked'), { ...FILES, 'kiln.yaml': imageYaml(VENDOR_URL), 'kiln.lock': formatLock(lock) });
  const fake = new FakeDrivers(upstreamFakes);
  const ctx = context(t, fake);
  await runChecked([lockStep, sourceStep], ctx);
  assert.deepEqual(fake.names(), ['fetchVerifiedImage', 'imageBaseTarball', 'basePackagesOfTar'], 'nothing of the archive: the lock pins no packages');
  const [req] = fake.only('fetchVerifiedImage');
  assert.deepEqual(req.locked, { sha256: IMAGE_PIN.sha256, sha512: IMAGE_PIN.sha512 });
  assert.equal(ctx.lock?.archive, undefined, 'no locked repository: the playbook reaches the network as in an unlocked build');
  assert.equal(ctx.source?.type === 'image' && ctx.source.lockSha256, ctx.lock?.sha256, "the record names kiln.lock's digest");

  const unlocked = new FakeDrivers(upstreamFakes);
  const u = context(t, unlocked, {}, { lock: 'ignore' });
  await runChecked([lockStep, sourceStep], u);
  assert.equal(unlocked.only('fetchVerifiedImage')[0].locked, undefined, '`kiln lock --update` checks only what kiln.yaml says');
});

test('an upstream lock: the parent release is resolved by the digest kiln.lock pins, not by the channel', async () => {
  const lock: LockFile = { lock: LOCK_FORMAT_UPSTREAM, image: 'web', upstream: { release: PARENT_PIN } };
  const t = templateRepo(join(work, 'release-locked'), { ...FILES, 'kiln.yaml': releaseYaml('base@stable'), 'kiln.lock': formatLock(lock) });
  const fake = new FakeDrivers(upstreamFakes);
  const ctx = context(t, fake);
  await runChecked([lockStep, sourceStep], ctx);
  assert.deepEqual(fake.names(), ['resolveParent', 'imageBaseTarball', 'basePackagesOfTar']);
  assert.deepEqual(fake.only('resolveParent')[5], PARENT_PIN);
  assert.ok(ctx.source?.type === 'release');
  assert.deepEqual([ctx.source.parent.version, ctx.source.parent.digest, ctx.source.lockSha256], [PARENT_PIN.version, PARENT_PIN.digest, ctx.lock?.sha256]);
});

test('a kiln.lock for another upstream than kiln.yaml names is an error at the lock file, before anything is fetched', async () => {
  const cases: [string, string, LockFile, RegExp][] = [
    ['archive-for-image', imageYaml(VENDOR_URL), LOCK, /kiln\.lock pins a Debian archive package set, but kiln\.yaml builds from a vendor image \(source\.image\)/],
    ['image-for-archive', FILES['kiln.yaml'], { lock: LOCK_FORMAT_UPSTREAM, image: 'web', upstream: { image: IMAGE_PIN } }, /kiln\.lock pins a vendor image \(source\.image\), but kiln\.yaml builds from a Debian archive package set/],
    ['image-moved', imageYaml('https://vendor.example/debian-13-genericcloud-amd64-20261201.qcow2'), { lock: LOCK_FORMAT_UPSTREAM, image: 'web', upstream: { image: IMAGE_PIN } }, /kiln\.lock pins the image https:\/\/vendor\.example\/debian-13-genericcloud-amd64\.qcow2, but kiln\.yaml names .*-20261201\.qcow2 \(source\.image\.url\)/],
    ['parent-renamed', releaseYaml('base@production'), { lock: LOCK_FORMAT_UPSTREAM, image: 'web', upstream: { release: PARENT_PIN } }, /kiln\.lock pins the parent base@stable, but kiln\.yaml names base@production \(source\.release\.ref\)/],
    ['release-for-image', imageYaml(VENDOR_URL), { lock: LOCK_FORMAT_UPSTREAM, image: 'web', upstream: { release: PARENT_PIN } }, /pins a parent release \(source\.release\), but kiln\.yaml builds from a vendor image/],
  ];
  for (const [name, yaml, lock, message] of cases) {
    const t = templateRepo(join(work, name), { ...FILES, 'kiln.yaml': yaml, 'kiln.lock': formatLock(lock) });
    const fake = new FakeDrivers({ ...lockFakes().impl, ...upstreamFakes });
    await assert.rejects(runChecked([lockStep, sourceStep], context(t, fake)), (e: unknown) => {
      failsAt('lock', message)(e);
      assert.equal((e as KilnError).where.file, join(t.dir, 'kiln.lock'), name);
      assert.match((e as KilnError).hint ?? '', /kiln lock --update/);
      return true;
    }, name);
    assert.deepEqual(fake.names(), [], `${name}: nothing verified or fetched`);
  }
});

// ---------------------------------------------------------------------------------------------
// tools

test("tools: the controller kiln.yaml's provision.ansible names, from controllerFor", async () => {
  const fake = new FakeDrivers({ controllerFor: async () => CONTROLLER });
  const ctx = context(plain, fake);
  await runChecked([toolsStep], ctx);
  const [config, cacheDir, workDir, , , pins] = fake.only('controllerFor');
  assert.equal(config, ctx.template.config);
  assert.deepEqual([cacheDir, workDir, pins], [ctx.cacheDir, ctx.workDir, undefined], 'not from kiln.lock');
  assert.equal(ctx.controller, CONTROLLER);
});

/** Stands for the source step, beside which the tools step begins (prepare): the tools tree is begun once the lock is served. */
const besideTools = step({ name: 'source', describe: 'the step the tools tree is built beside', async run() { /* nothing */ } });

test("tools: a locked build's tools tree comes from the pinned .debs, served for controllerFor, and must hold only pinned packages", async () => {
  const { impl, closed } = lockFakes();
  const fake = new FakeDrivers({ ...impl, controllerFor: async () => CONTROLLER });
  const ctx = context(locked, fake);
  await runChecked([lockStep, besideTools, toolsStep], ctx);
  assert.deepEqual(fake.names(), [...LOCK_CALLS, 'fetchLockedDebs', 'lockedPackagesIndex', 'serveLockedRepo', 'controllerFor'], 'no cached tools tree: the pins are fetched');
  const [pins, fetch] = fake.calls('fetchLockedDebs')[1];
  assert.deepEqual(pins, TOOLS_PINS);
  assert.equal(fetch.mirror, TOOLS_PINS.archive.mirror, "the tools tree's own mirror, as kiln.lock pins it");
  const [served, , index, dir] = fake.calls('serveLockedRepo')[1];
  assert.deepEqual([served, index, dir], [TOOLS_PINS, 'Packages of trixie\n', join(ctx.workDir, 'locked-tools-repo')]);
  const [, , , , , pinned] = fake.only('controllerFor');
  assert.deepEqual(pinned, { sourcesLine: 'deb [trusted=yes] http://127.0.0.1:41001/ ./', packageSet: packageSetDigest(TOOLS_PINS), trust: TOOLS_TRUST });
  assert.equal(ctx.controller, CONTROLLER);
  assert.deepEqual(closed, [dir, join(ctx.workDir, 'locked-repo')], 'the tools repository is closed once the tree is built, the image repository when the build ends');

  // A tree with a package the lock does not pin fails, naming it and the lock; its repository is closed all the same.
  const extra = toolsTree([...installed(TOOLS_PINS.packages), { name: 'sshpass', version: '1.10-0.1', arch: 'amd64' }]);
  const bad = lockFakes();
  const unpinned = new FakeDrivers({ ...bad.impl, controllerFor: async () => ({ ...CONTROLLER, tools: extra }) });
  const b = context(locked, unpinned);
  await assert.rejects(runChecked([lockStep, besideTools, toolsStep], b), (e: unknown) => {
    failsAt('tools', /the tools tree has 1 package\(s\) kiln\.lock does not pin: sshpass 1\.10-0\.1 \(amd64\)/)(e);
    return e instanceof KilnError && e.where.file === join(locked.dir, 'kiln.lock');
  });
  assert.ok(bad.closed.includes(join(b.workDir, 'locked-tools-repo')));
  assert.equal(b.controller, undefined);
});

// ---------------------------------------------------------------------------------------------
// provision

const REPO_FILES = ['kiln.yaml', 'playbook.yml', 'keys/release-signing'];
const FIRST = outcome(task('install nginx', 'changed'), task('start nginx', 'changed', { action: 'ansible.builtin.service', service: { name: 'nginx', state: 'started' }, path: 'playbook.yml:9' }), task('facts', 'ok'));
const SECOND = outcome(task('install nginx', 'ok'), task('start nginx', 'ok'), task('facts', 'ok'));

/** The provision step's drivers; `box` is the sandbox it opens. */
function provisionFakes(box: FakeBox, extra: Partial<Drivers> = {}): FakeDrivers {
  return new FakeDrivers({ repositoryFiles: async () => REPO_FILES, openProvisionSandbox: async () => box, ...extra });
}

/** A context for the provision step, holding what the source and tools steps would have given it. */
function provisionContext(t: TemplateRepo, fake: FakeDrivers, trust: ArchiveTrust): BuildContext {
  return context(t, fake, { source: { ...SOURCE, archiveDate: trust.archiveDate }, trust, controller: CONTROLLER });
}
/** The provision step after version and work-area (real: git and a directory) and `earlier` (the lock step). */
const provisionRun = (ctx: BuildContext, earlier: BuildStep[] = []) => runChecked([versionStep, workAreaStep, ...earlier, provisionStep], ctx, ['source', 'trust', 'controller']);

test('provision: the sandbox gets the tree, the repository without signing keys, outbound network and the base date; the playbook runs twice', async () => {
  const box = new FakeBox([FIRST, SECOND]);
  const fake = provisionFakes(box);
  const ctx = provisionContext(plain, fake, LIVE_TRUST);
  await provisionRun(ctx);
  const version = ctx.version ?? assert.fail('the version step ran');
  assert.deepEqual(fake.names(), ['repositoryFiles', 'openProvisionSandbox'], 'no hostController (the tools step gave one), no installedPackages (nothing is locked)');
  assert.deepEqual(fake.only('repositoryFiles'), [version.repoRoot]);
  const [o] = fake.only('openProvisionSandbox');
  assert.deepEqual({ ...o, logger: undefined }, {
    tree: ctx.root, workDir: ctx.workDir, cacheDir: ctx.cacheDir, controller: CONTROLLER.root,
    repo: { root: version.repoRoot, files: REPO_FILES },
    exclude: o.exclude,
    network: 'outbound', hostPorts: [8080], hostname: 'driven',
    sourceDateEpoch: LIVE_TRUST.archiveDate,
    locked: undefined, buildSourcesLine: undefined, logger: undefined,
  });
  assert.ok(o.exclude?.includes(resolve(plain.dir, 'keys/release-signing')), 'the release signing key never reaches the sandbox');
  assert.notEqual(o.sourceDateEpoch, COMMIT_EPOCH, "the packages' date, not the commit's: a new tag on the same inputs reuses the tree");

  assert.deepEqual(box.events, [
    `syntax-check ${ctx.template.playbook} in ${plain.dir}`, 'apt-get -q update', 'ansible-playbook', 'ansible-playbook', 'stop', 'stop',
  ], 'checked, updated, run twice, stopped (by the step, and again by its cleanup, which must be harmless)');
  assert.deepEqual(box.runs[0].extraVars, { greeting: 'hello', kiln_image_name: 'web', kiln_image_version: 'release-0.1.0', kiln_image_commit: version.commit, kiln_build: true });
  assert.deepEqual(box.runs[1].extraVars, box.runs[0].extraVars);
  assert.equal(ctx.sandbox, box);
  assert.deepEqual(ctx.provision, {
    controller: describeController(CONTROLLER), tasks: FIRST.results, totals: FIRST.totals,
    deferred: [{ service: 'nginx', action: 'start', task: 'start nginx', path: 'playbook.yml:9' }],
    idempotence: { mode: 'fail', changed: [], totals: SECOND.totals },
  });
});

test('provision: two unlocked builds on one cache directory provision one at a time (they share its apt lists); the lock is released after a failure too', async () => {
  const shared = join(work, 'cache', 'shared-apt');
  const order: string[] = [];
  const slowBox = (name: string, fail = false) => {
    const box = new FakeBox([FIRST, SECOND]);
    const stop = box.stop.bind(box);
    // The step's cleanup stops the sandbox again (a no-op for a stopped sandbox): only the first stop ends it.
    let stopped = false;
    box.stop = async () => { if (stopped) return; stopped = true; await new Promise((r) => setTimeout(r, 150)); order.push(`${name} stop`); await stop(); };
    const provision = box.provision.bind(box);
    box.provision = async (o) => { if (fail) throw new KilnError(`${name}: task failed`); return provision(o); };
    return new FakeDrivers({ repositoryFiles: async () => REPO_FILES, openProvisionSandbox: async () => { order.push(`${name} open`); return box; } });
  };
  const other = templateRepo(join(work, 'plain-too'), FILES);
  const a = context(plain, slowBox('a', true), { source: SOURCE, trust: LIVE_TRUST, controller: CONTROLLER }, { cacheDir: shared });
  const b = context(other, slowBox('b'), { source: SOURCE, trust: LIVE_TRUST, controller: CONTROLLER }, { cacheDir: shared });
  const [ra, rb] = await Promise.allSettled([provisionRun(a), provisionRun(b)]);
  assert.equal(ra.status, 'rejected', 'a fails in its playbook');
  assert.equal(rb.status, 'fulfilled', 'b waits for a and then provisions');
  const first = order[0].split(' ')[0];
  const second = first === 'a' ? 'b' : 'a';
  assert.deepEqual(order, [`${first} open`, `${first} stop`, `${second} open`, `${second} stop`], 'never two sandboxes on the shared apt lists at once');
  assert.equal(existsSync(join(shared, 'apt.lock')), false, 'the lock is gone when both are done');
});

test('provision: with idempotence: fail, a task that changes on the second run fails the build, naming the task', async () => {
  const box = new FakeBox([FIRST, outcome(task('install nginx', 'ok'), task('write motd', 'changed', { path: `${plain.dir}/playbook.yml:3` }))]);
  const ctx = provisionContext(plain, provisionFakes(box), LIVE_TRUST);
  await assert.rejects(provisionRun(ctx), (e: unknown) => {
    failsAt('provision', /the playbook is not idempotent: 1 task\(s\) changed on the second run/)(e);
    assert.ok(e instanceof KilnError);
    assert.equal(e.detail, `changed: write motd (${plain.dir}/playbook.yml:3)`);
    assert.equal(e.where.file, ctx.template.playbook);
    return true;
  });
  assert.ok(box.events.includes('stop'), 'the sandbox is stopped on failure too');
  assert.equal(ctx.provision, undefined);
});

test('provision: a locked build has no network and apt from the locked repository; a package outside kiln.lock fails the build, naming it', async () => {
  const box = new FakeBox([FIRST, SECOND]);
  const fake = provisionFakes(box, { ...lockFakes().impl, installedPackages: async () => installed(LOCK.packages) });
  // The trust the source step hands on in a locked build: what the lock step's chain check found.
  const ctx = provisionContext(locked, fake, IMAGE_TRUST);
  await provisionRun(ctx, [lockStep]);
  const [o] = fake.only('openProvisionSandbox');
  assert.equal(o.network, 'none', 'a locked build reaches nothing: every package is in the local repository');
  assert.deepEqual(o.locked, { repoDir: join(ctx.workDir, 'locked-repo'), debsDir: join(ctx.workDir, 'locked-repo', 'debs') });
  assert.equal(o.buildSourcesLine, undefined);
  assert.equal(o.sourceDateEpoch, IMAGE_TRUST.archiveDate, "the verified lock's archive date");
  assert.deepEqual(fake.only('installedPackages'), [ctx.root], 'the finished tree is compared with the lock');
  assert.ok(ctx.provision);

  const box2 = new FakeBox([FIRST, SECOND]);
  const htop = { name: 'htop', version: '3.2.2-2', arch: 'amd64' };
  const unlocked = provisionFakes(box2, { ...lockFakes().impl, installedPackages: async () => [...installed(LOCK.packages), htop] });
  await assert.rejects(provisionRun(provisionContext(locked, unlocked, IMAGE_TRUST), [lockStep]), (e: unknown) => {
    failsAt('provision', /the image has 1 package\(s\) that are not in kiln\.lock: htop 3\.2\.2-2 \(amd64\)/)(e);
    return e instanceof KilnError && /kiln lock --update/.test(e.hint ?? '');
  });
  assert.ok(box2.events.includes('stop'), 'the sandbox was stopped');
});

// ---------------------------------------------------------------------------------------------
// disk

test("disk: assembled from the tree with the seed name@version, the commit's SOURCE_DATE_EPOCH and kiln.yaml's size, firmware and command line", async () => {
  const LAYOUT: DiskLayout = { diskGuid: 'g', rootFsUuid: 'r', espSerial: '1A2B-3C4D', partitions: [], sizeBytes: 64 * 1024 * 1024 };
  const fake = new FakeDrivers({
    // The step reads the size of what it made: the fake writes a small file there.
    assembleDisk: async (spec) => { writeFileSync(spec.out, 'disk'); return LAYOUT; },
  });
  const ctx = context(plain, fake, { source: SOURCE });
  await runChecked([versionStep, workAreaStep, diskStep], ctx, ['source']);
  const [spec] = fake.only('assembleDisk');
  assert.deepEqual({ ...spec, logger: undefined }, {
    root: ctx.root, out: join(ctx.workDir, 'disk.raw'), sizeBytes: 64 * 1024 * 1024, firmware: ['bios', 'uefi'],
    seed: 'web@release-0.1.0', sourceDateEpoch: COMMIT_EPOCH, kernelCmdline: 'console=ttyS0',
    workDir: join(ctx.workDir, 'disk'), logger: undefined,
  });
  assert.equal(ctx.version?.sourceDateEpoch, COMMIT_EPOCH, "the disk's times are the commit's");
  assert.deepEqual(ctx.disk, { raw: join(ctx.workDir, 'disk.raw'), layout: LAYOUT });
});
