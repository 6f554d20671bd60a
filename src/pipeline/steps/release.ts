/** release: the artifacts, SBOM, provenance and signature as an immutable OCI release; a snapshot never is one. */
import { basename } from 'node:path';
import { exec } from '../../exec.js';
import { makeProvenance, makeSbom, signerFromConfig, type ReleaseRecord } from '../../store/index.js';
import type { BuildFacts } from '../../store/record.js';
import type { SourceRecord } from '../../source/record.js';
import type { BuildVersion } from '../../version/git.js';
import { KILN_VERSION } from '../../version.js';
import { hostToolVersions } from '../cache-keys.js';
import { step, type BuildEnv, type BuildState } from '../context.js';
import { buildStore, releasing } from './release-store.js';

/** The facts provenance records about how the build ran: git tree, Ansible, host tool versions. */
export async function buildFacts(ctx: BuildEnv & Pick<BuildState, 'controller'>, v: BuildVersion): Promise<BuildFacts> {
  const tree = await exec('git', ['-C', v.repoRoot, 'rev-parse', `${v.commit}^{tree}`], { allowFailure: true });
  const hostTools = { ...await hostToolVersions() };
  const c = ctx.controller;
  const tools = c?.tools;
  const collections = tools?.packages.find((p) => p.name === 'ansible')?.version;
  return {
    ...(tree.code === 0 ? { gitTree: tree.stdout.trim() } : {}),
    ...(c ? { ansible: { core: c.ansibleCore, ...(collections ? { collections } : {}), controller: tools ? 'tools-tree' as const : 'host' as const, ...(tools ? { toolsSuite: tools.suite, toolsInRelease: tools.trust.inReleaseSha256 } : {}) } } : {}),
    hostTools,
    ...(ctx.remoteCache?.stats.hits.length ? { remoteCache: { location: ctx.remoteCache.location, steps: [...ctx.remoteCache.stats.hits], ...(ctx.remoteCache.stats.signers.length ? { signedBy: [...ctx.remoteCache.stats.signers] } : {}) } } : {}),
  };
}

export function releaseRecord(ctx: BuildEnv & Pick<BuildState, 'packages'>, v: BuildVersion, src: SourceRecord, build?: BuildFacts): ReleaseRecord {
  const materials = src.type === 'image'
    ? [{ name: 'vendor-image', uri: src.ami ? `ec2://${src.ami.region}/${src.ami.imageId}` : src.url, digest: { sha256: src.sha256, sha512: src.sha512 } }]
    : src.type === 'release'
      ? [
        { name: 'parent-release', uri: `kiln-release:${src.parent.name}@${src.parent.version}`, digest: { sha256: src.parent.digest.replace(/^sha256:/, '') } },
        ...(src.root ? [{ name: `root-${src.root.kind}`, uri: src.root.uri, digest: src.root.digest }] : []),
      ]
      : [
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
    // A child records its parent (and the upstream at the root of the chain): the store shows its
    // status and refuses it when an ancestor is revoked (src/store/ancestry.ts).
    parents: src.type === 'release' ? [src.parent] : [],
    ...(src.type === 'release' && src.root ? { root: src.root } : {}),
    buildDurationSeconds: Math.round((Date.now() - ctx.startedAt) / 1000),
    ...(build ? { build: { ...build, steps: ctx.stepTimes.map((t) => ({ name: t.name, seconds: Math.round(t.durationMs / 100) / 10 })) } } : {}),
    kilnVersion: KILN_VERSION,
    artifacts: [],
  };
}

export const releaseStep = step({
  name: 'release',
  describe: 'publish the artifacts, SBOM, provenance and signature as an immutable release',
  reads: ['name', 'release'],
  needs: ['version', 'source', 'artifacts'],
  uses: ['packages', 'controller', 'staged'],
  provides: ['release'],
  skip: (ctx) => !releasing(ctx),
  async run(ctx, p, signal) {
    const cfg = ctx.template.config.release;
    // The store the formats step staged the artifacts in (its staged copies belong to that instance).
    const s = ctx.staged?.store ?? await buildStore(ctx);
    const record = releaseRecord(ctx, ctx.version, ctx.source, await buildFacts(ctx, ctx.version));
    const artifacts = ctx.artifacts.map((a) => {
      const b = ctx.staged?.blobs.get(a.format);
      return b ? { ...a, staged: b.path } : a;
    });
    const signer = await signerFromConfig(cfg.sign, ctx.template.dir);
    const full = { ...record, artifacts: artifacts.map((a) => ({ format: a.format, file: basename(a.file), size: a.size, sha256: a.sha256 })) };
    const res = await s.publish({
      record, artifacts, sbom: makeSbom(full), provenance: makeProvenance(full, artifacts), signer, signal,
      onProgress: (file, done, total) => p.status(`${file.split('/').pop()}: ${Math.floor((100 * done) / Math.max(total, 1))}%`),
    });
    ctx.release = { store: cfg.store, ref: res.ref, digest: res.digest, ...(res.identical ? { identical: true } : {}) };
    if (res.identical) p.log(`${res.ref} already released, identical: ${res.digest} has the same artifacts${res.ours ? ` (this build's record differs only in its build facts: ${res.ours})` : ''}`);
    else p.log(`${res.ref} ${res.digest}${signer ? ' (signed)' : ' (unsigned)'}`);
  },
});
