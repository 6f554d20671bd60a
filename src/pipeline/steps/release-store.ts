/** The release store a build writes to, opened with kiln.yaml's policy (shared by preflight and release). */
import { openStore, signerFromConfig, trustFromConfig } from '../../store/index.js';
import { parseTtlDays } from '../../store/metadata.js';
import type { BuildEnv, BuildState } from '../context.js';

/** A release build goes into the store once; a snapshot, or --no-release, never does. */
export function releasing(ctx: BuildEnv & Pick<Required<BuildState>, 'version'>): boolean {
  return !ctx.version.snapshot && !ctx.options.noRelease;
}

export async function buildStore(ctx: Pick<BuildEnv, 'template'>) {
  const r = ctx.template.config.release;
  return openStore(r.store, ctx.template.dir, {
    trust: await trustFromConfig(r.trust, ctx.template.dir), metadataTtlDays: parseTtlDays(r.metadata_ttl),
    signer: () => signerFromConfig(r.sign, ctx.template.dir),
  });
}
