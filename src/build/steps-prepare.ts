/** The first half of a build: version, trusted source, Kiln's layer, the playbook, the stamp. */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { applyImageLayer } from '../image/layer.js';
import { stampTree } from '../image/stamp.js';
import { humanSeconds } from '../log.js';
import { ProvisionSandbox, releaseTree, repositoryFiles, signingKeyFiles } from '../provision/chroot.js';
import { deferredServiceActions, type PlaybookEvent } from '../provision/results.js';
import { controllerFor, describeController, hostController, type Controller } from '../sandbox/tools.js';
import { eventStatus } from '../provision/run.js';
import { baseTarball, buildSourcesLine, extractTree, installedPackages, verifyArchive } from '../source/debian.js';
import { compareInstalled, explainLockedFailure, lockedBase, lockedController } from './steps-lock.js';
import { resolveVersion } from '../version/git.js';
import { checkOutDir, publishOutputs } from './outputs.js';
import type { Step, StepProgress } from '../pipeline/runner.js';
import type { BuildContext } from './context.js';

export const resolveVersionStep: Step<BuildContext> = {
  name: 'version',
  describe: 'resolve the version from the git tag at HEAD',
  async run(ctx, p) {
    const t = ctx.template;
    ctx.version = await resolveVersion(t.dir, t.file, { tagPattern: t.config.version.tag_pattern, snapshot: ctx.options.snapshot });
    const v = ctx.version;
    p.log(`${t.config.name}@${v.version} (commit ${v.commit.slice(0, 12)}, SOURCE_DATE_EPOCH=${v.sourceDateEpoch}${v.snapshot ? ', SNAPSHOT: cannot be released' : ''})`);
  },
};

export const workAreaStep: Step<BuildContext> = {
  name: 'work area',
  describe: 'create the scratch directory for this build; check the out directory can take the artifacts',
  async run(ctx) {
    // Before any work: found at the end, a taken name would leave a release without its outputs.
    await checkOutDir(ctx);
    removeStaleWorkAreas(join(ctx.workDir, '..'));
    mkdirSync(ctx.stagingDir, { recursive: true });
    mkdirSync(ctx.root, { recursive: true });
  },
  async cleanup(ctx) {
    rmSync(ctx.workDir, { recursive: true, force: true });
  },
};

/**
 * Work areas of builds whose process is gone (kill -9, a crash, a reboot): their sandboxes died
 * with them, only files remain. Named <time>-<pid>; a live pid's area is left alone.
 */
export function removeStaleWorkAreas(dir: string): void {
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const pid = Number(/-(\d+)$/.exec(name)?.[1]);
    if (!pid || pid === process.pid || processAlive(pid)) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

export const fetchSourceStep: Step<BuildContext> = {
  name: 'source',
  describe: 'Debian from the signed archive (mmdebstrap), verified against the archive keyring',
  async run(ctx, p) {
    const d = ctx.template.config.source.debian;
    // A locked build trusts what the lock step verified of the InRelease kept with kiln.lock; it needs no live archive state.
    ctx.trust = ctx.lock ? ctx.lock.trust : await verifyArchive(d, ctx.workDir, ctx.logger);
    const signed = ctx.trust.verified ? `InRelease ${ctx.trust.inReleaseSha256.slice(0, 16)}… signed by ${ctx.trust.signingKeyFingerprint}` : 'InRelease NOT verified (source.debian.verify: false)';
    p.log(ctx.lock ? `packages from kiln.lock (resolved from ${signed})` : signed);
    const t0 = Date.now();
    const base = await baseTarball(d, ctx.trust, ctx.cacheDir, ctx.workDir, ctx.logger, (l) => p.status(l.replace(/^I: /, '')), ctx.lock ? lockedBase(ctx.lock) : undefined);
    p.log(base.cached ? `base tree from cache (${base.key.slice(0, 12)})` : `base tree built by mmdebstrap in ${humanSeconds(Date.now() - t0)}`);
    await extractTree(base.tar, ctx.root, ctx.logger);
    const packages = await installedPackages(ctx.root);
    ctx.source = {
      type: 'debian', mirror: d.mirror, suite: d.suite, components: d.components, verified: ctx.trust.verified,
      inReleaseSha256: ctx.trust.inReleaseSha256, archiveDate: ctx.trust.archiveDate,
      signingKeyFingerprint: ctx.trust.signingKeyFingerprint, keyring: d.keyring, keyringSha256: ctx.trust.keyringSha256,
      packages, baseKey: base.key, baseSha256: base.sha256, ...(ctx.lock ? { lockSha256: ctx.lock.sha256 } : {}),
    };
  },
};

export const imageLayerStep: Step<BuildContext> = {
  name: 'configure',
  describe: "Kiln's layer: hostname, DHCP on any NIC, cloud-init user injection",
  async run(ctx) {
    applyImageLayer(ctx.root, { hostname: ctx.template.config.disk.hostname });
  },
};

export const toolsStep: Step<BuildContext> = {
  name: 'tools',
  describe: "the Ansible controller: a tools tree built with mmdebstrap and cached (provision.ansible), or the host's",
  async run(ctx, p) {
    const t0 = Date.now();
    const status = (l: string) => p.status(l.replace(/^I: /, ''));
    ctx.controller = ctx.lock ? await lockedController(ctx, status) : await controllerFor(ctx.template.config, ctx.cacheDir, ctx.workDir, ctx.logger, status);
    p.log(`${describeController(ctx.controller)}${ctx.controller.tools && !ctx.controller.tools.cached ? `, built in ${humanSeconds(Date.now() - t0)}` : ''}`);
  },
};

export const provisionStep: Step<BuildContext> = {
  name: 'provision',
  describe: 'apply the Ansible playbook over the chroot connection, in the build sandbox',
  async run(ctx, p) {
    const v = ctx.version!;
    const t = ctx.template;
    const controller = ctx.controller ?? await hostController();
    p.status('starting the build sandbox');
    ctx.sandbox = await ProvisionSandbox.open({
      tree: ctx.root, workDir: ctx.workDir, cacheDir: ctx.cacheDir, controller: controller.root,
      repo: { root: v.repoRoot, files: await repositoryFiles(v.repoRoot) }, exclude: signingKeyFiles(t.config, t.dir),
      network: ctx.lock ? 'none' : 'outbound', hostPorts: t.config.provision.host_ports, hostname: t.config.disk.hostname, sourceDateEpoch: v.sourceDateEpoch,
      locked: ctx.lock ? { repoDir: ctx.lock.repo.dir, debsDir: ctx.lock.repo.debsDir } : undefined,
      buildSourcesLine: !ctx.lock && !t.config.source.debian.verify ? buildSourcesLine(t.config.source.debian) : undefined, logger: ctx.logger,
    });
    try {
      await provisionTree(ctx, ctx.sandbox, controller, p);
    } catch (e) {
      throw ctx.lock ? explainLockedFailure(e, ctx.lock) : e;
    } finally {
      // --on-error=keep leaves the tree as the failing task saw it; the debug shell opens a new sandbox on it.
      await ctx.sandbox.stop();
    }
    if (ctx.lock) {
      const { unlocked, unused } = compareInstalled(await installedPackages(ctx.root), ctx.lock.lock);
      if (unlocked.length) throw new KilnError(`the image has ${unlocked.length} package(s) that are not in kiln.lock: ${unlocked.slice(0, 5).join(', ')}`, { detail: unlocked.join('\n'), hint: 'run `kiln lock --update` and commit kiln.lock' });
      if (unused.length) p.log(`warning: ${unused.length} locked package(s) are not installed (\`kiln lock --update\` drops them): ${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', …' : ''}`);
    }
    // policy-rc.d and Ansible's temp dir must not reach the image.
    releaseTree(ctx.root);
  },
  async cleanup(ctx) {
    await ctx.sandbox?.stop();
    if (ctx.options.onError !== 'keep' && existsSync(ctx.root)) releaseTree(ctx.root);
  },
};

async function provisionTree(ctx: BuildContext, box: ProvisionSandbox, controller: Controller, p: StepProgress): Promise<void> {
  const t = ctx.template;
  const v = ctx.version!;
  p.status('ansible-playbook --syntax-check');
  await box.syntaxCheck(t.playbook, t.dir);
  p.status('apt-get update');
  await box.runInImage(['apt-get', '-q', 'update']);
  const extraVars = {
    ...t.config.provision.vars,
    kiln_image_name: t.config.name, kiln_image_version: v.version, kiln_image_commit: v.commit, kiln_build: true,
  };
  const onEvent = (e: PlaybookEvent) => {
    const s = eventStatus(e);
    if (!s) return;
    if (e.kind === 'result' && e.result && e.result.status !== 'ok' && e.result.status !== 'skipped') p.log(s);
    else p.status(s, e.kind === 'task-start');
  };
  const first = await box.provision({ playbook: t.playbook, cwd: t.dir, extraVars, onEvent });
  const tt = first.totals;
  p.log(`ok=${tt.ok} changed=${tt.changed} failed=${tt.failures} skipped=${tt.skipped}`);
  const deferred = deferredServiceActions(first.results);
  ctx.provision = { controller: describeController(controller), tasks: first.results, totals: first.totals, deferred };
  if (deferred.length) p.log(`deferred to first boot (nothing runs while an image is built): ${deferred.map((d) => `${d.action} ${d.service}`).join(', ')}`);
  const mode = t.config.provision.idempotence;
  if (mode !== 'off') {
    p.status('idempotence: running the playbook again');
    const second = await box.provision({ playbook: t.playbook, cwd: t.dir, extraVars, onEvent: (e) => { const s = eventStatus(e); if (s) p.status(`idempotence: ${s}`); } });
    const changed = second.results.filter((r) => r.status === 'changed').map((r) => `${r.task}${r.path ? ` (${r.path})` : ''}`);
    ctx.provision.idempotence = { mode, changed, totals: second.totals };
    if (changed.length) {
      const msg = `the playbook is not idempotent: ${changed.length} task(s) changed on the second run`;
      if (mode === 'fail') {
        throw new KilnError(msg, {
          where: { file: t.playbook }, detail: changed.map((c) => `changed: ${c}`).join('\n'),
          hint: 'make these tasks declare state (creates:, changed_when:, modules instead of shell), or set provision.idempotence: warn',
        });
      }
      p.log(`warning: ${msg}:\n${changed.map((c) => `        ${c}`).join('\n')}`);
    } else {
      p.log('idempotent: the second run changed nothing');
    }
  }
}

export const stampStep: Step<BuildContext> = {
  name: 'stamp',
  describe: 'write the version to /etc/release and os-release',
  async run(ctx, p) {
    const v = ctx.version!;
    stampTree(ctx.root, { name: ctx.template.config.name, version: v.version, commit: v.commit, snapshot: v.snapshot, sourceDateEpoch: v.sourceDateEpoch });
    ctx.packages = await installedPackages(ctx.root);
    p.log(`${ctx.packages.length} packages installed`);
  },
};

export const publishStep: Step<BuildContext> = {
  name: 'outputs',
  describe: "move the finished artifacts into place, replacing only Kiln's files",
  async run(ctx, p, signal) {
    await publishOutputs(ctx, signal);
    p.log(ctx.outDir!);
  },
};
