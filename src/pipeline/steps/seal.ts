/** seal: scrub host identities, MAC bindings, agents, provisioner leftovers, logs, histories, caches; first-boot units. */
import { join } from 'node:path';
import { markBuildTimes } from '../../disk/tree.js';
import { sealTree } from '../../seal/seal.js';
import { packTree } from '../../source/debian.js';
import { step } from '../context.js';
import { TREE_FILE } from './provision.js';

export const sealStep = step({
  name: 'seal',
  describe: 'scrub host identities, MAC bindings, agents, provisioner leftovers, logs, histories, caches',
  reads: ['seal'],
  needs: ['version', 'provision'],
  uses: ['cache', 'treeSince'],
  provides: ['seal'],
  async run(ctx, p) {
    const cached = ctx.cache?.disk ?? ctx.cache?.tree;
    if (cached) {
      ctx.seal = cached.data.seal;
      p.log(`from cache ${cached.key.slice(0, 12)}`);
      return;
    }
    const s = ctx.template.config.seal;
    // Files the seal writes keep the clock's time like the playbook's; below they get the build's mark.
    const report = await sealTree(ctx.root, { disable: s.disable, keep: s.keep, logger: ctx.logger });
    ctx.seal = report;
    const touched = report.operations.filter((o) => o.changed.length).map((o) => `${o.name}(${o.changed.length})`);
    p.log(touched.length ? `sealed: ${touched.join(' ')}` : 'nothing to seal');
    if (report.disabled.length) p.log(`disabled by kiln.yaml: ${report.disabled.join(', ')}`);
    if (ctx.treeSince !== undefined) {
      const n = markBuildTimes(ctx.root, ctx.treeSince - 1000);
      p.log(`${n} entries written by the build marked for the disk's clamp to SOURCE_DATE_EPOCH`);
    }
    const c = ctx.cache;
    if (c) {
      // Stored before the version stamp, so a new tag on unchanged content reuses it.
      p.status('storing the sealed tree in the step cache');
      const tar = join(ctx.workDir, TREE_FILE);
      await packTree(ctx.root, tar, ctx.logger);
      await c.store.put('tree', c.keys.tree.key, c.keys.tree.inputs, { provision: ctx.provision, seal: report }, [{ name: TREE_FILE, from: tar }]);
      p.log(`stored as ${c.keys.tree.key.slice(0, 12)}`);
    }
  },
});
