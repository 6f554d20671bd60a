/** Releasing: a release build goes into the store once, immutably; a snapshot never does. */
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { makeProvenance, makeSbom, openStore, signerFromConfig, trustFromConfig, type ReleaseRecord } from '../store/index.js';
import type { BuildFacts } from '../store/record.js';
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

/** Host packages whose programs write the image's bytes or check its inputs. */
const HOST_TOOLS = ['mmdebstrap', 'qemu-utils', 'e2fsprogs', 'fuse2fs', 'mtools', 'fdisk', 'grub-pc-bin', 'grub-efi-amd64-bin', 'gpgv', 'bubblewrap', 'tar', 'xz-utils'];

/** The facts provenance records about how the build ran: git tree, Ansible, host tool versions. */
export async function buildFacts(ctx: BuildContext): Promise<BuildFacts> {
  const v = ctx.version!;
  const tree = await exec('git', ['-C', v.repoRoot, 'rev-parse', `${v.commit}^{tree}`], { allowFailure: true });
  const q = await exec('dpkg-query', ['-W', '-f', '${db:Status-Abbrev}\t${Package}\t${Version}\n', ...HOST_TOOLS], { allowFailure: true });
  const hostTools: Record<string, string> = {};
  for (const l of q.stdout.split('\n')) {
    const [status, name, version] = l.split('\t');
    if (status?.startsWith('ii') && name) hostTools[name] = version;
  }
  const c = ctx.controller;
  const tools = c?.tools;
  const collections = tools?.packages.find((p) => p.name === 'ansible')?.version;
  return {
    ...(tree.code === 0 ? { gitTree: tree.stdout.trim() } : {}),
    ...(c ? { ansible: { core: c.ansibleCore, ...(collections ? { collections } : {}), controller: tools ? 'tools-tree' as const : 'host' as const, ...(tools ? { toolsSuite: tools.suite, toolsInRelease: tools.trust.inReleaseSha256 } : {}) } } : {}),
    hostTools,
  };
}

export function releaseRecord(ctx: BuildContext, build?: BuildFacts): ReleaseRecord {
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
    ...(build ? { build } : {}),
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
    const record = releaseRecord(ctx, await buildFacts(ctx));
    const artifacts = ctx.artifacts;
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

