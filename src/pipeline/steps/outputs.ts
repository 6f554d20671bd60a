/** outputs: the finished artifacts into .kiln/out/<name>-<version> or --out, replacing only Kiln's files. */
import { step } from '../context.js';
import { publishOutputs } from '../outputs.js';

export const outputsStep = step({
  name: 'outputs',
  describe: "move the finished artifacts into place, replacing only Kiln's files",
  needs: ['version', 'artifacts'],
  provides: ['outDir', 'artifacts'],
  async run(ctx, p, signal) {
    const placed = await publishOutputs(ctx, ctx.artifacts, signal);
    ctx.artifacts = placed.artifacts;
    ctx.outDir = placed.outDir;
    p.log(placed.outDir);
  },
});
