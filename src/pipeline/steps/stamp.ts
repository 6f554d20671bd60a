/** stamp: the version into /etc/release and os-release; the finished tree's package list. */
import { stampTree, type Lineage } from '../../image/stamp.js';
import type { SourceRecord } from '../../source/record.js';
import { installedPackages } from '../../source/debian.js';
import { step } from '../context.js';

export const stampStep = step({
  name: 'stamp',
  describe: 'write the version to /etc/release and os-release',
  reads: ['name'],
  needs: ['version', 'source'],
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
    stampTree(ctx.root, { name: ctx.template.config.name, version: v.version, commit: v.commit, snapshot: v.snapshot, sourceDateEpoch: v.sourceDateEpoch, lineage: lineageOf(ctx.source) });
    const packages = await installedPackages(ctx.root);
    ctx.packages = packages;
    p.log(`${packages.length} packages installed`);
  },
});

/** What /etc/release says of where the image comes from. */
export function lineageOf(s: SourceRecord): Lineage | undefined {
  if (s.type === 'image') return { ancestry: [], root: `vendor-image ${s.url} sha256:${s.sha256}` };
  if (s.type === 'release') {
    const d = s.root ? Object.entries(s.root.digest)[0] : undefined;
    return { parent: { ref: `${s.parent.name}@${s.parent.version}`, digest: s.parent.digest }, ancestry: s.ancestry, ...(s.root && d ? { root: `${s.root.kind} ${s.root.uri} ${d[0]}:${d[1]}` } : {}) };
  }
  return undefined;
}
