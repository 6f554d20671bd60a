/** stamp: the version into /etc/release and os-release; the finished tree's package list. */
import { stampTree } from '../../image/stamp.js';
import { installedPackages } from '../../source/debian.js';
import { step } from '../context.js';

export const stampStep = step({
  name: 'stamp',
  describe: 'write the version to /etc/release and os-release',
  reads: ['name'],
  needs: ['version'],
  uses: ['cache'],
  provides: ['packages'],
  async run(ctx, p) {
    const hit = ctx.cache?.disk;
    if (hit) {
      ctx.packages = hit.data.packages;
      p.log(`from cache (disk ${hit.key.slice(0, 12)}): ${hit.data.packages.length} packages`);
      return;
    }
    const v = ctx.version;
    stampTree(ctx.root, { name: ctx.template.config.name, version: v.version, commit: v.commit, snapshot: v.snapshot, sourceDateEpoch: v.sourceDateEpoch });
    const packages = await installedPackages(ctx.root);
    ctx.packages = packages;
    p.log(`${packages.length} packages installed`);
  },
});
