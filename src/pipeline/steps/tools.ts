/**
 * tools: the Ansible controller, a cached tools tree built with mmdebstrap (or the host's Ansible).
 * A tree not yet cached is built while the source step builds the base tree (prepare(), src/pipeline/runner.ts):
 * it depends only on kiln.yaml and the lock, and the two mmdebstrap runs share no file.
 */
import { humanSeconds } from '../../log.js';
import { describeController, type Controller } from '../../sandbox/tools.js';
import { step, type BuildContext } from '../context.js';
import { lockedController } from './lock.js';

/** What prepare() built, per build, and how long it took; the runner runs prepare() to its end before run(). */
const prepared = new WeakMap<object, { controller: Controller; ms: number }>();

function controllerOf(ctx: BuildContext, status: (l: string) => void): Promise<Controller> {
  return ctx.lock ? lockedController(ctx, ctx.lock, status) : ctx.drivers.controllerFor(ctx.template.config, ctx.cacheDir, ctx.workDir, ctx.logger, status, undefined, ctx.remoteCache);
}

export const toolsStep = step({
  name: 'tools',
  describe: "the Ansible controller: a tools tree built with mmdebstrap and cached (provision.ansible), or the host's",
  reads: ['provision', 'source'],
  uses: ['lock'],
  provides: ['controller'],
  async prepare(ctx) {
    const t0 = Date.now();
    // Quiet: the step before this one owns the progress line; this step reports when its turn comes.
    const controller = await controllerOf(ctx, (l) => ctx.logger.debug(`tools: ${l}`));
    prepared.set(ctx, { controller, ms: Date.now() - t0 });
  },
  async run(ctx, p) {
    const t0 = Date.now();
    const early = prepared.get(ctx);
    prepared.delete(ctx);
    const controller = early?.controller ?? await controllerOf(ctx, (l) => p.status(l.replace(/^I: /, '')));
    ctx.controller = controller;
    const built = controller.tools && !controller.tools.cached;
    p.log(`${describeController(controller)}${built ? `, built in ${humanSeconds(early?.ms ?? Date.now() - t0)}${early ? ' while the step before ran' : ''}` : ''}`);
  },
});
