/** disk: the tree as a raw GPT disk (ext4 root, BIOS + UEFI boot), assembled from files without mounts. */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { humanBytes } from '../../log.js';
import { parseSize } from '../../template/schema.js';
import { step } from '../context.js';

/** The raw disk's file in its cache entry. */
export const DISK_FILE = 'disk.raw';

export const diskStep = step({
  name: 'disk',
  describe: 'assemble the raw GPT disk (ext4 root, BIOS + UEFI boot) from the tree, without mounts',
  reads: ['name', 'disk'],
  needs: ['version', 'source'],
  uses: ['cache'],
  provides: ['disk'],
  async run(ctx, p) {
    const c = ctx.template.config;
    const v = ctx.version;
    const hit = ctx.cache?.disk;
    if (hit) {
      ctx.disk = { raw: hit.file(DISK_FILE), layout: hit.data.layout };
      p.log(`from cache ${hit.key.slice(0, 12)}`);
      return;
    }
    const raw = join(ctx.workDir, 'disk.raw');
    const layout = await ctx.drivers.assembleDisk({
      root: ctx.root, out: raw, sizeBytes: parseSize(c.disk.size), firmware: c.disk.firmware, seed: `${c.name}@${v.version}`,
      sourceDateEpoch: v.sourceDateEpoch, kernelCmdline: c.disk.kernel_cmdline, workDir: join(ctx.workDir, 'disk'), logger: ctx.logger,
      // A vendor image keeps its partition numbers, offsets and GUIDs, and the UUIDs its fstab names.
      ...(ctx.source.type === 'image' ? { vendor: ctx.source.layout } : {}),
    });
    ctx.disk = { raw, layout };
    const st = statSync(raw);
    p.log(`${humanBytes(st.size)} disk, ${humanBytes(st.blocks * 512)} allocated`);
    // Stored by the formats step, which has the raw's digest by then (src/pipeline/steps/formats.ts).
  },
});
