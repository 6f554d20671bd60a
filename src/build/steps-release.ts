/** Releasing: a release build goes into the store once, immutably; a snapshot never does. */
import { KilnError } from '../errors.js';
import { makeProvenance, makeSbom, openStore, signerFromConfig, trustFromConfig, type ReleaseRecord } from '../store/index.js';
import { parseTtlDays } from '../store/metadata.js';
import type { Step } from '../pipeline/runner.js';
import { KILN_VERSION } from '../version.js';
import type { BuildContext } from './context.js';

function releasing(ctx: BuildContext): boolean {
  return !ctx.version!.snapshot && !ctx.options.noRelease;
}

async function store(ctx: BuildContext) {
  const r = ctx.template.config.release;
  return openStore(r.store, ctx.template.dir, {
    trust: await trustFromConfig(r.trust, ctx.template.dir), metadataTtlDays: parseTtlDays(r.metadata_ttl),
    signer: () => signerFromConfig(r.sign, ctx.template.dir),
  });
}

export const releaseCheckStep: Step<BuildContext> = {
  name: 'preflight',
  describe: 'refuse to rebuild a released version (releases are immutable); check the signing key works',
  skip: (ctx) => !releasing(ctx),
  async run(ctx, p) {
    const v = ctx.version!;
    const name = ctx.template.config.name;
    // A signing key that is missing, unreadable or locked fails now, not after the whole build.
    const signer = await signerFromConfig(ctx.template.config.release.sign, ctx.template.dir);
    if (signer) {
      await signer.sign(Buffer.from('kiln-preflight: the signing key works\n'));
      p.log(`signing key ${signer.identity}`);
    }
    const s = await store(ctx);
    if (await s.exists(name, v.version)) {
      throw new KilnError(`${name}@${v.version} is already released in ${ctx.template.config.release.store}; a version is never rebuilt in place`, {
        hint: 'tag a new version for any change, `kiln rebuild` checks reproducibility, and --no-release or --snapshot builds without releasing',
      });
    }
    p.log(`${name}@${v.version} is not released yet`);
  },
};

export function releaseRecord(ctx: BuildContext): ReleaseRecord {
  const v = ctx.version!;
  const src = ctx.source!;
  const materials = [
    { name: 'debian-archive', uri: `${src.mirror.replace(/\/$/, '')}/dists/${src.suite}/InRelease`, digest: { sha256: src.inReleaseSha256 ?? '' } },
    ...(src.keyringSha256 ? [{ name: 'archive-keyring', uri: `file://${src.keyring}`, digest: { sha256: src.keyringSha256 } }] : []),
  ];
  return {
    name: ctx.template.config.name,
    version: v.version,
    git: { commit: v.commit, tag: v.tag, repository: v.repoRoot },
    sourceDateEpoch: v.sourceDateEpoch,
    template: v.templatePath,
    source: { ...src, packages: ctx.packages ?? src.packages, basePackages: src.packages },
    materials,
    parents: [],
    buildDurationSeconds: Math.round((Date.now() - ctx.startedAt) / 1000),
    kilnVersion: KILN_VERSION,
    artifacts: [],
  };
}

export const releaseStep: Step<BuildContext> = {
  name: 'release',
  describe: 'publish the artifacts, SBOM, provenance and signature as an immutable release',
  skip: (ctx) => !releasing(ctx),
  async run(ctx, p, signal) {
    const cfg = ctx.template.config.release;
    const s = await store(ctx);
    const record = releaseRecord(ctx);
    const artifacts = ctx.artifacts.map((a) => ({ format: a.format, file: a.file, size: a.size, sha256: a.sha256, mediaType: a.mediaType }));
    const signer = await signerFromConfig(cfg.sign, ctx.template.dir);
    const full = { ...record, artifacts: artifacts.map((a) => ({ format: a.format, file: a.file.split('/').pop()!, size: a.size, sha256: a.sha256 })) };
    const res = await s.publish({
      record, artifacts, sbom: makeSbom(full), provenance: makeProvenance(full, artifacts), signer, signal,
      onProgress: (file, done, total) => p.status(`${file.split('/').pop()}: ${Math.floor((100 * done) / Math.max(total, 1))}%`),
    });
    ctx.release = { store: cfg.store, ref: res.ref, digest: res.digest };
    p.log(`${res.ref} ${res.digest}${signer ? ' (signed)' : ' (unsigned)'}`);
  },
};

