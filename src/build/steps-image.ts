/** The second half of a build: the disk, its audit, the formats, the release. */
import { createReadStream, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { assembleDisk } from '../disk/index.js';
import { humanBytes } from '../log.js';
import type { Step } from '../pipeline/runner.js';
import { parseSize } from '../template/schema.js';
import type { BuildContext } from './context.js';

export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export const diskStep: Step<BuildContext> = {
  name: 'disk',
  describe: 'assemble the raw GPT disk (ext4 root, BIOS + UEFI boot) from the tree, without mounts',
  async run(ctx, p) {
    const c = ctx.template.config;
    const v = ctx.version!;
    const raw = join(ctx.workDir, 'disk.raw');
    ctx.diskLayout = await assembleDisk({
      root: ctx.root, out: raw, sizeBytes: parseSize(c.disk.size), firmware: c.disk.firmware, seed: `${c.name}@${v.version}`,
      sourceDateEpoch: v.sourceDateEpoch, kernelCmdline: c.disk.kernel_cmdline, workDir: join(ctx.workDir, 'disk'), logger: ctx.logger,
    });
    ctx.raw = raw;
    const st = statSync(raw);
    p.log(`${humanBytes(st.size)} disk, ${humanBytes(st.blocks * 512)} allocated`);
  },
};
