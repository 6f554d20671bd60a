/** audit: the finished disk itself is read back (not the tree): any finding fails the build. */
import { join } from 'node:path';
import { auditImage } from '../../audit/image.js';
import { formatFindings } from '../../audit/tree.js';
import { KilnError } from '../../errors.js';
import { step } from '../context.js';

export const auditStep = step({
  name: 'audit',
  describe: 'prove the seal: read the disk (not the tree) and fail on any finding',
  reads: ['seal', 'audit'],
  needs: ['disk'],
  uses: ['cache'],
  provides: ['findings'],
  async run(ctx, p, signal) {
    const cache = ctx.cache;
    if (cache?.audit) {
      // An audit entry exists only for a disk that passed, with these seal and audit settings.
      ctx.findings = [];
      p.log(`from cache ${cache.audit.key.slice(0, 12)}: clean`);
      return;
    }
    const s = ctx.template.config.seal;
    const findings = await auditImage(ctx.disk.raw, { format: 'raw', disable: s.disable, keep: s.keep, accept: ctx.template.config.audit.accept, workDir: join(ctx.workDir, 'audit'), logger: ctx.logger, signal });
    ctx.findings = findings;
    if (findings.length) {
      throw new KilnError(`the audit found ${findings.length} problem(s) in the image`, {
        detail: formatFindings(findings),
        hint: 'remove these in the playbook, or declare deliberate files in seal.keep and secrets shipped on purpose by fingerprint in audit.accept (kiln.yaml)',
      });
    }
    p.log('clean: no findings');
    if (cache) await cache.store.put('audit', cache.keys.audit.key, cache.keys.audit.inputs, null);
  },
});
