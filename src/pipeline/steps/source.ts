/** source: Debian from the signed archive (or kiln.lock's verified set) as the image's base tree, with its source record. */
import { humanSeconds } from '../../log.js';
import { join } from 'node:path';
import { step } from '../context.js';
import { lockedBase } from './lock.js';

export const sourceStep = step({
  name: 'source',
  describe: 'Debian from the signed archive (mmdebstrap), verified against the archive keyring',
  reads: ['source'],
  uses: ['lock'],
  provides: ['trust', 'source', 'base'],
  async run(ctx, p) {
    const d = ctx.template.config.source.debian;
    // A locked build trusts what the lock step verified of the InRelease kept with kiln.lock; it needs no live archive state.
    const trust = ctx.lock ? ctx.lock.trust : await ctx.drivers.verifyArchive(d, ctx.workDir, ctx.logger);
    ctx.trust = trust;
    const signed = trust.verified ? `InRelease ${trust.inReleaseSha256.slice(0, 16)}… signed by ${trust.signingKeyFingerprint}` : 'InRelease NOT verified (source.debian.verify: false)';
    p.log(ctx.lock ? `packages from kiln.lock (resolved from ${signed})` : signed);
    const t0 = Date.now();
    const base = await ctx.drivers.baseTarball(d, trust, ctx.cacheDir, ctx.workDir, ctx.logger, (l) => p.status(l.replace(/^I: /, '')), ctx.lock ? lockedBase(ctx.lock) : undefined);
    p.log(base.cached ? `base tree from cache (${base.key.slice(0, 12)})` : `base tree built by mmdebstrap in ${humanSeconds(Date.now() - t0)}`);
    // The tree itself is unpacked by the configure step, and only when no cached step output makes it unnecessary.
    ctx.base = { tar: base.tar };
    const packages = await ctx.drivers.basePackagesOfTar(base.tar, join(ctx.workDir, 'base-dpkg'));
    ctx.source = {
      type: 'debian', mirror: d.mirror, suite: d.suite, components: d.components, verified: trust.verified,
      inReleaseSha256: trust.inReleaseSha256, archiveDate: trust.archiveDate,
      signingKeyFingerprint: trust.signingKeyFingerprint, keyring: d.keyring, keyringSha256: trust.keyringSha256,
      packages, baseKey: base.key, baseSha256: base.sha256, ...(ctx.lock ? { lockSha256: ctx.lock.sha256 } : {}),
    };
  },
});
