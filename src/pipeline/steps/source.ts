/** source: the trusted upstream as the image's base tree: Debian from the signed archive (or kiln.lock's verified set), or a verified vendor image. */
import { humanSeconds } from '../../log.js';
import { join } from 'node:path';
import { step, type BuildContext } from '../context.js';
import { lockedBase } from './lock.js';
import type { StepProgress } from '../runner.js';
import type { ImageSourceConfig } from '../../source/image.js';

export const sourceStep = step({
  name: 'source',
  describe: 'Debian from the signed archive (mmdebstrap), or a vendor image verified by pinned digest or signed checksums',
  reads: ['source'],
  uses: ['lock'],
  provides: ['source', 'base'],
  mayProvide: ['trust'],
  async run(ctx, p) {
    const image = ctx.template.config.source.image;
    if (image) return imageSource(ctx, image, p);
    if (ctx.template.config.source.release) return releaseSource(ctx, p);
    const d = ctx.template.config.source.debian;
    const locked = ctx.lock?.archive;
    // A locked build trusts what the lock step verified of the InRelease kept with kiln.lock; it needs no live archive state.
    const trust = locked ? locked.trust : await ctx.drivers.verifyArchive(d, ctx.workDir, ctx.logger);
    ctx.trust = trust;
    const signed = trust.verified ? `InRelease ${trust.inReleaseSha256.slice(0, 16)}… signed by ${trust.signingKeyFingerprint}` : 'InRelease NOT verified (source.debian.verify: false)';
    p.log(locked ? `packages from kiln.lock (resolved from ${signed})` : signed);
    const t0 = Date.now();
    const base = await ctx.drivers.baseTarball(d, trust, ctx.cacheDir, ctx.workDir, ctx.logger, (l) => p.status(l.replace(/^I: /, '')), locked ? lockedBase(locked) : undefined, ctx.remoteCache);
    p.log(base.cached ? `base tree from ${base.remote ? `the cache at ${ctx.remoteCache?.location}` : 'cache'} (${base.key.slice(0, 12)})` : `base tree built by mmdebstrap in ${humanSeconds(Date.now() - t0)}`);
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

/** A vendor image: downloaded (or from the cache), verified by every configured check, read into a base tree tarball. */
async function imageSource(ctx: BuildContext, config: ImageSourceConfig, p: StepProgress): Promise<void> {
  const pin = ctx.lock?.lock.upstream?.image;
  const img = await ctx.drivers.fetchVerifiedImage({
    config, dir: ctx.template.dir, cacheDir: ctx.cacheDir, logger: ctx.logger, onStatus: (s) => p.status(s), ...(pin ? { locked: { sha256: pin.sha256, sha512: pin.sha512, ...(pin.ami ? { ami: pin.ami } : {}) } } : {}),
  });
  p.log(`${img.url} ${img.sha256.slice(0, 16)}… ${img.verified ? `verified: ${img.checks.join('; ')}` : 'NOT verified (source.image.verify: false)'}${img.cached ? ' (cached)' : ''}`);
  const t0 = Date.now();
  p.status('reading the image\'s root filesystem (fuse2fs)');
  const base = await ctx.drivers.imageBaseTarball(img, config, ctx.cacheDir, ctx.workDir, ctx.logger);
  const parts = base.layout.partitions.map((q) => `p${q.index} ${q.role}`).join(', ');
  p.log(base.cached ? `base tree from cache (${base.key.slice(0, 12)}): ${parts}` : `base tree read from the image in ${humanSeconds(Date.now() - t0)}: ${base.layout.detail}; ${parts}`);
  ctx.base = { tar: base.tar };
  const packages = await ctx.drivers.basePackagesOfTar(base.tar, join(ctx.workDir, 'base-dpkg'));
  const { file: _file, cached: _cached, ...trust } = img;
  ctx.source = { type: 'image', ...trust, ...(ctx.lock ? { lockSha256: ctx.lock.sha256 } : {}), format: base.layout.detail, layout: base.layout, packages, baseKey: base.key, baseSha256: base.sha256, date: base.date };
}

/** An earlier Kiln release: resolved with the trust policy, its disk verified against the record, read into a base tree tarball. */
async function releaseSource(ctx: BuildContext, p: StepProgress): Promise<void> {
  const cfg = ctx.template.config;
  const pin = ctx.lock?.lock.upstream?.release;
  const r = await ctx.drivers.resolveParent(cfg, ctx.template.dir, ctx.cacheDir, ctx.logger, (s) => p.status(s), pin);
  p.log(`parent ${r.parent.name}@${r.parent.version}${r.parent.channel ? ` (channel ${r.parent.channel})` : ''} ${r.parent.digest.slice(0, 19)}…: ${r.image.checks.join('; ')}${r.image.cached ? ' (cached)' : ''}`);
  if (r.ancestry.length > 1) p.log(`ancestry: ${r.ancestry.join(' <- ')}`);
  const t0 = Date.now();
  p.status("reading the parent's root filesystem (fuse2fs)");
  const base = await ctx.drivers.imageBaseTarball(r.image, {}, ctx.cacheDir, ctx.workDir, ctx.logger);
  p.log(base.cached ? `base tree from cache (${base.key.slice(0, 12)})` : `base tree read from the parent's ${r.artifact.format} in ${humanSeconds(Date.now() - t0)}`);
  ctx.base = { tar: base.tar };
  const packages = await ctx.drivers.basePackagesOfTar(base.tar, join(ctx.workDir, 'base-dpkg'));
  ctx.source = {
    type: 'release', ref: cfg.source.release?.ref ?? '', store: r.store, parent: r.parent, ...(r.root ? { root: r.root } : {}), ancestry: r.ancestry,
    artifact: r.artifact, signers: r.signers, verified: true, ...(ctx.lock ? { lockSha256: ctx.lock.sha256 } : {}), packages, baseKey: base.key, baseSha256: base.sha256, date: r.sourceDateEpoch, layout: base.layout,
  };
}
