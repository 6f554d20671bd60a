/** seal: scrub host identities, MAC bindings, agents, provisioner leftovers, logs, histories, caches; first-boot units. */
import { sealTree } from '../../seal/seal.js';
import { step } from '../context.js';

export const sealStep = step({
  name: 'seal',
  describe: 'scrub host identities, MAC bindings, agents, provisioner leftovers, logs, histories, caches',
  reads: ['seal'],
  needs: ['version', 'provision'],
  provides: ['seal'],
  async run(ctx, p) {
    const s = ctx.template.config.seal;
    const report = await sealTree(ctx.root, { disable: s.disable, keep: s.keep, logger: ctx.logger, sourceDateEpoch: ctx.version.sourceDateEpoch });
    ctx.seal = report;
    const touched = report.operations.filter((o) => o.changed.length).map((o) => `${o.name}(${o.changed.length})`);
    p.log(touched.length ? `sealed: ${touched.join(' ')}` : 'nothing to seal');
    if (report.disabled.length) p.log(`disabled by kiln.yaml: ${report.disabled.join(', ')}`);
  },
});
