/** provision: the Ansible playbook over the chroot connection, in the build sandbox, twice (idempotence). */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../../errors.js';
import { releaseTree, signingKeyFiles } from '../../provision/chroot.js';
import { deferredServiceActions, type PlaybookEvent } from '../../provision/results.js';
import { eventStatus } from '../../provision/run.js';
import { describeController, type Controller } from '../../sandbox/tools.js';
import { buildSourcesLine } from '../../source/debian.js';
import { sourceDate } from '../../source/record.js';
import type { BuildVersion } from '../../version/git.js';
import type { StepProgress } from '../runner.js';
import { step, type BuildEnv, type ProvisionRecord } from '../context.js';
import type { ProvisionBox } from '../drivers.js';
import { compareInstalled, explainLockedFailure } from './lock.js';
import { withLock } from '../../store/lock.js';

/** How long a build waits for another build's provisioning on the same cache directory. */
const APT_LOCK_WAIT_MS = 2 * 3600_000;

/** The provisioned and sealed tree's file in its cache entry. */
export const TREE_FILE = 'tree.tar';

export const provisionStep = step({
  name: 'provision',
  describe: 'apply the Ansible playbook over the chroot connection, in the build sandbox',
  reads: ['name', 'provision', 'source', 'disk', 'release'],
  needs: ['version', 'source'],
  uses: ['controller', 'lock', 'cache'],
  provides: ['provision'],
  mayProvide: ['sandbox'],
  async run(ctx, p, signal) {
    const v = ctx.version;
    const t = ctx.template;
    const cached = ctx.cache?.disk ?? ctx.cache?.tree;
    if (cached) {
      // A cached tree is the provisioned and sealed tree, unpacked here; a cached disk needs no tree at all.
      if (!ctx.cache?.disk && ctx.cache?.tree) await ctx.drivers.extractTree(ctx.cache.tree.file(TREE_FILE), ctx.root, ctx.logger);
      ctx.provision = cached.data.provision;
      p.log(`from cache ${ctx.cache?.disk ? `(disk ${cached.key.slice(0, 12)})` : cached.key.slice(0, 12)}`);
      return;
    }
    const controller = ctx.controller ?? await ctx.drivers.hostController();
    // A lock of the archive's packages serves them as the only repository; a lock of an upstream image or release pins no packages.
    const locked = ctx.lock?.archive;
    const provision = async () => {
      p.status('starting the build sandbox');
      const sandbox = await ctx.drivers.openProvisionSandbox({
        tree: ctx.root, workDir: ctx.workDir, cacheDir: ctx.cacheDir, controller: controller.root,
        repo: { root: v.repoRoot, files: await ctx.drivers.repositoryFiles(v.repoRoot) }, exclude: signingKeyFiles(t.config, t.dir),
        network: locked ? 'none' : 'outbound', hostPorts: t.config.provision.host_ports, hostname: t.config.disk.hostname,
        // The date of the packages, not of the commit: what the playbook makes is a function of its inputs, so a new tag on unchanged content can reuse it (src/pipeline/cache-keys.ts).
        sourceDateEpoch: sourceDate(ctx.source),
        locked: locked ? { repoDir: locked.repo.dir, debsDir: locked.repo.debsDir } : undefined,
        buildSourcesLine: !locked && !t.config.source.debian.verify ? buildSourcesLine(t.config.source.debian) : undefined, logger: ctx.logger,
      });
      ctx.sandbox = sandbox;
      try {
        ctx.provision = await provisionTree(ctx, v, sandbox, controller, p);
      } catch (e) {
        throw locked ? explainLockedFailure(e, locked.set) : e;
      } finally {
        // --on-error=keep leaves the tree as the failing task saw it; the debug shell opens a new sandbox on it.
        await sandbox.stop();
      }
    };
    if (locked) await provision();
    else {
      // An unlocked build shares the cache's apt lists and .deb archive with every build on this cache
      // directory (read-write, for apt and the playbook's apt tasks): one provisioning at a time holds them,
      // as apt's own lock would inside one machine. Builds with kiln.lock have their own copies.
      mkdirSync(ctx.cacheDir, { recursive: true });
      await withLock(join(ctx.cacheDir, 'apt.lock'), provision, APT_LOCK_WAIT_MS, {
        what: "the cache's apt lists and archive", signal,
        onWait: (o) => p.status(`waiting for another build's provisioning${o ? ` (pid ${o.pid})` : ''}: it holds the cache's apt lists`),
      });
    }
    if (locked) {
      const { unlocked, unused } = compareInstalled(await ctx.drivers.installedPackages(ctx.root), locked.set);
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
});

async function provisionTree(ctx: BuildEnv, v: BuildVersion, box: ProvisionBox, controller: Controller, p: StepProgress): Promise<ProvisionRecord> {
  const t = ctx.template;
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
  const record: ProvisionRecord = { controller: describeController(controller), tasks: first.results, totals: first.totals, deferred };
  if (deferred.length) p.log(`deferred to first boot (nothing runs while an image is built): ${deferred.map((d) => `${d.action} ${d.service}`).join(', ')}`);
  const mode = t.config.provision.idempotence;
  if (mode !== 'off') {
    p.status('idempotence: running the playbook again');
    const second = await box.provision({ playbook: t.playbook, cwd: t.dir, extraVars, onEvent: (e) => { const s = eventStatus(e); if (s) p.status(`idempotence: ${s}`); } });
    const changed = second.results.filter((r) => r.status === 'changed').map((r) => `${r.task}${r.path ? ` (${r.path})` : ''}`);
    record.idempotence = { mode, changed, totals: second.totals };
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
  return record;
}
