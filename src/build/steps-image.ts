/** The second half of a build: the disk, its audit, the formats, the release. */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { auditImage } from '../audit/image.js';
import { formatFindings } from '../audit/tree.js';
import { assembleDisk } from '../disk/index.js';
import { writeFormats } from '../formats/index.js';
import { KilnError } from '../errors.js';
import { sealTree } from '../seal/seal.js';
import { humanBytes } from '../log.js';
import type { Step } from '../pipeline/runner.js';
import { parseSize } from '../template/schema.js';
import type { BuildContext } from './context.js';

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

export const sealStep: Step<BuildContext> = {
  name: 'seal',
  describe: 'scrub host identities, MAC bindings, agents, provisioner leftovers, logs, histories, caches',
  async run(ctx, p) {
    const s = ctx.template.config.seal;
    const report = await sealTree(ctx.root, { disable: s.disable, keep: s.keep, logger: ctx.logger, sourceDateEpoch: ctx.version!.sourceDateEpoch });
    ctx.sealReport = report;
    const touched = report.operations.filter((o) => o.changed.length).map((o) => `${o.name}(${o.changed.length})`);
    p.log(touched.length ? `sealed: ${touched.join(' ')}` : 'nothing to seal');
    if (report.disabled.length) p.log(`disabled by kiln.yaml: ${report.disabled.join(', ')}`);
  },
};

export const auditStep: Step<BuildContext> = {
  name: 'audit',
  describe: 'prove the seal: read the disk (not the tree) and fail on any finding',
  async run(ctx, p) {
    const s = ctx.template.config.seal;
    const findings = await auditImage(ctx.raw!, { format: 'raw', disable: s.disable, keep: s.keep, accept: ctx.template.config.audit.accept, workDir: join(ctx.workDir, 'audit'), logger: ctx.logger });
    ctx.findings = findings;
    if (findings.length) {
      throw new KilnError(`the audit found ${findings.length} problem(s) in the image`, {
        detail: formatFindings(findings),
        hint: 'remove these in the playbook, or declare deliberate files in seal.keep and secrets shipped on purpose by fingerprint in audit.accept (kiln.yaml)',
      });
    }
    p.log('clean: no findings');
  },
};

export const formatsStep: Step<BuildContext> = {
  name: 'formats',
  describe: 'write every format asked for from the one raw disk',
  async run(ctx, p) {
    const c = ctx.template.config;
    const v = ctx.version!;
    const artifacts = await writeFormats(c.formats, {
      raw: ctx.raw!, outDir: ctx.stagingDir, name: c.name, version: v.version, sourceDateEpoch: v.sourceDateEpoch,
      firmware: c.disk.firmware, cpus: c.vm.cpus, memoryMiB: c.vm.memory_mib, description: c.description, logger: ctx.logger,
    });
    ctx.artifacts = artifacts;
    ctx.raw = artifacts.find((a) => a.format === 'raw')?.file ?? ctx.raw;
    for (const a of ctx.artifacts) p.log(`${a.format.padEnd(6)} ${humanBytes(a.size).padStart(10)}  ${a.sha256.slice(0, 16)}…`);
  },
};
