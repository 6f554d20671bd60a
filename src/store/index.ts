/**
 * The release store's API for the build pipeline and the CLI.
 *
 *   const store = await openStore(config.release.store, templateDir, { trust });
 *   await store.publish({ record, artifacts, sbom: makeSbom(record), provenance: makeProvenance(record, artifacts), signer });
 *   const r = await store.resolve('web@production', { format: 'qcow2' });
 */
import { existsSync } from 'node:fs';
import { isAbsolute, join, resolve as resolvePath } from 'node:path';
import { KilnError } from '../errors.js';
import { userTrustFile } from './policy.js';
import { LayoutStore } from './layout.js';
import { RegistryStore } from './registry.js';
import { ReleaseStore, type ReleaseStoreOptions, type TrustPolicy } from './release-store.js';
import { loadSigner, loadTrustedKey, type Signer, type TrustedKey } from './signing.js';

export { makeSbom } from './sbom.js';
export { makeProvenance } from './provenance.js';
export { formatMediaType } from './oci.js';
export { loadSigner, loadTrustedKey } from './signing.js';
export type { Signer, TrustedKey } from './signing.js';
export { ReleaseStore, parseReleaseRef, checkAncestry } from './release-store.js';
export type { Ancestry, RevokedAncestor } from './ancestry.js';
export type { PublishInput, Resolved, ResolvedArtifact, ReleaseListing, VerifyReport, TrustPolicy, ChannelState, Revocation, MetadataView } from './release-store.js';
export type { CloudIds } from './metadata.js';
export type { ReleaseRecord, ArtifactInput, ReleaseArtifact, StoredSource, SourcePackage, Material, ReleaseParent, ReleaseRoot } from './record.js';
export { TagExistsError } from './backend.js';
export { DigestMismatchError } from './blobio.js';

export const DEFAULT_STORE = '.kiln/store';
/** A trust policy file older versions read from a local store; ignored now (a store cannot set its readers' policy). */
export const STORE_POLICY_FILE = 'trust.json';

export interface OpenStoreOptions extends ReleaseStoreOptions {
  /** Create an empty layout when the directory has none (publish, pull). Default true. */
  create?: boolean;
  /** Plain http for a registry other than localhost. */
  insecure?: boolean;
  trust?: Partial<TrustPolicy>;
  /** Registry credentials; default KILN_REGISTRY_USER / KILN_REGISTRY_PASSWORD. */
  user?: string;
  password?: string;
  /** Registry chunked-upload size (bytes). */
  chunkSize?: number;
}

export function isRemoteSpec(spec: string): boolean {
  return spec.startsWith('oci://');
}

/** Opens a store: `oci://host[:port][/prefix]` is a registry, anything else a layout directory relative to baseDir. */
export async function openStore(spec: string, baseDir: string, opts: OpenStoreOptions = {}): Promise<ReleaseStore> {
  const trust: TrustPolicy = { requireSignature: opts.trust?.requireSignature ?? false, keys: [...(opts.trust?.keys ?? [])] };
  if (isRemoteSpec(spec)) {
    const backend = new RegistryStore(spec, {
      insecure: opts.insecure,
      user: opts.user ?? process.env.KILN_REGISTRY_USER,
      password: opts.password ?? process.env.KILN_REGISTRY_PASSWORD,
      chunkSize: opts.chunkSize,
    });
    return new ReleaseStore(backend, trust, opts);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//.test(spec)) throw new KilnError(`unsupported store ${spec}`, { hint: 'a store is a directory or oci://host[:port][/prefix]', exitCode: 2 });
  const dir = isAbsolute(spec) ? spec : resolvePath(baseDir, spec);
  const backend = await LayoutStore.open(dir, { create: opts.create ?? true });
  if (existsSync(join(dir, STORE_POLICY_FILE))) {
    process.stderr.write(`warning: ignoring ${join(dir, STORE_POLICY_FILE)}: whoever writes a store cannot set its readers' trust policy; put it in ${userTrustFile()} or kiln.yaml's release.trust\n`);
  }
  return new ReleaseStore(backend, trust, opts);
}

/** The trust policy of kiln.yaml's release.trust (key files relative to kiln.yaml's directory). */
export async function trustFromConfig(trust: { require_signature?: boolean; keys?: string[] } | undefined, baseDir: string): Promise<TrustPolicy> {
  const keys: TrustedKey[] = [];
  for (const k of trust?.keys ?? []) keys.push(await loadTrustedKey(resolvePath(baseDir, k)));
  return { requireSignature: trust?.require_signature ?? false, keys };
}

/** The signer from KILN_SIGNING_KEY (a key file) or kiln.yaml's release.sign; undefined when neither is set. */
export async function signerFromConfig(sign: { ssh_key?: string; pgp_key?: string } | undefined, baseDir: string, env = process.env): Promise<Signer | undefined> {
  const file = env.KILN_SIGNING_KEY || sign?.ssh_key || sign?.pgp_key;
  if (!file) return undefined;
  return loadSigner(resolvePath(baseDir, file));
}
