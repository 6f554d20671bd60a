/** formats: every format kiln.yaml asks for, written from the one raw disk (src/formats/registry.ts). */
import { writeFormats } from '../../formats/index.js';
import { humanBytes } from '../../log.js';
import { step } from '../context.js';

export const formatsStep = step({
  name: 'formats',
  describe: 'write every format asked for from the one raw disk',
  reads: ['name', 'formats', 'disk', 'vm', 'description'],
  needs: ['version', 'disk'],
  provides: ['artifacts'],
  async run(ctx, p) {
    const c = ctx.template.config;
    const v = ctx.version;
    const artifacts = await writeFormats(c.formats, {
      raw: ctx.disk.raw, outDir: ctx.stagingDir, name: c.name, version: v.version, sourceDateEpoch: v.sourceDateEpoch,
      firmware: c.disk.firmware, cpus: c.vm.cpus, memoryMiB: c.vm.memory_mib, description: c.description, logger: ctx.logger,
    });
    ctx.artifacts = artifacts;
    for (const a of artifacts) p.log(`${a.format.padEnd(6)} ${humanBytes(a.size).padStart(10)}  ${a.sha256.slice(0, 16)}…`);
  },
});
