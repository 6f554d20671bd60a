/** cache: the keys of this build's cacheable outputs, and which of them the step cache already holds. */
import { cacheKeys } from '../cache-keys.js';
import { cacheLimit, StepCache } from '../step-cache.js';
import { step, type CachePlan, type DiskData, type FormatData, type TreeData } from '../context.js';

export const cacheStep = step({
  name: 'cache',
  describe: 'look up the outputs of the steps below in the step cache, by the hash of their inputs',
  reads: ['name', 'provision', 'seal', 'source', 'disk', 'audit', 'formats', 'vm', 'description'],
  needs: ['version', 'source'],
  uses: ['lock', 'controller'],
  mayProvide: ['cache'],
  skip: (ctx) => Boolean(ctx.options.noCache),
  async run(ctx, p) {
    cacheLimit(); // a bad KILN_CACHE_MAX_SIZE fails now, not after the build
    const store = new StepCache(ctx.cacheDir, ctx.logger, ctx.remoteCache);
    const keys = await cacheKeys(ctx);
    const plan: CachePlan = { store, keys, formats: new Map() };
    for (const [f, k] of keys.formats) {
      const hit = await store.get<FormatData>(`format:${f}`, k.key);
      if (hit) plan.formats.set(f, hit);
    }
    plan.audit = await store.get<null>('audit', keys.audit.key);
    plan.disk = await store.get<DiskData>('disk', keys.disk.key);
    // A cached disk makes the tree unnecessary.
    if (!plan.disk) plan.tree = await store.get<TreeData>('tree', keys.tree.key);
    ctx.cache = plan;
    const hits = [plan.tree && 'tree', plan.disk && 'disk', plan.audit && 'audit', ...[...plan.formats.keys()]].filter(Boolean);
    p.log(hits.length ? `cached: ${hits.join(', ')} (tree ${keys.tree.key.slice(0, 12)}, disk ${keys.disk.key.slice(0, 12)})` : `nothing cached (tree ${keys.tree.key.slice(0, 12)}, disk ${keys.disk.key.slice(0, 12)})`);
  },
});
