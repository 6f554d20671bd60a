/** tools: the Ansible controller, a cached tools tree built with mmdebstrap (or the host's Ansible). */
import { humanSeconds } from '../../log.js';
import { describeController } from '../../sandbox/tools.js';
import { step } from '../context.js';
import { lockedController } from './lock.js';

export const toolsStep = step({
  name: 'tools',
  describe: "the Ansible controller: a tools tree built with mmdebstrap and cached (provision.ansible), or the host's",
  reads: ['provision', 'source'],
  uses: ['lock'],
  provides: ['controller'],
  async run(ctx, p) {
    const t0 = Date.now();
    const status = (l: string) => p.status(l.replace(/^I: /, ''));
    const controller = ctx.lock ? await lockedController(ctx, ctx.lock, status) : await ctx.drivers.controllerFor(ctx.template.config, ctx.cacheDir, ctx.workDir, ctx.logger, status);
    ctx.controller = controller;
    p.log(`${describeController(controller)}${controller.tools && !controller.tools.cached ? `, built in ${humanSeconds(Date.now() - t0)}` : ''}`);
  },
});
