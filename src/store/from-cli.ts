/**
 * The store a command works on: --store, else kiln.yaml's release.store when kiln.yaml is in the
 * current directory, else .kiln/store. The trust policy is the verifier's (policy.ts): kiln.yaml,
 * the user's trust file and the flags, never the store. Metadata changes are signed with
 * --sign-key, KILN_SIGNING_KEY or kiln.yaml's release.sign.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadTemplate } from '../template/load.js';
import { DEFAULT_STORE, openStore } from './index.js';
import { parseTtlDays } from './metadata.js';
import { verifierPolicy } from './policy.js';
import type { ReleaseStore } from './release-store.js';
import { loadSigner, type Signer } from './signing.js';

export interface StoreFlags {
  store?: string;
  insecure?: boolean;
  'require-signature'?: boolean;
  'trust-key'?: string[];
  'sign-key'?: string;
}

/** The option table every store command shares (spread into parse()). */
export const storeOptions = {
  store: { type: 'string', description: 'The release store: a directory or an OCI registry (oci://host[:port]/prefix); default: kiln.yaml release.store', value: 'DIR|oci://...' },
  insecure: { type: 'boolean', description: 'Allow plain http to a registry that is not on localhost' },
  'require-signature': { type: 'boolean', description: 'Refuse releases that are not signed by a trusted key' },
  'trust-key': { type: 'string', multiple: true, description: 'A public key (SSH or OpenPGP) whose signatures are trusted', value: 'FILE' },
  'sign-key': { type: 'string', description: 'Sign what this command writes with this private key (else KILN_SIGNING_KEY or kiln.yaml release.sign)', value: 'FILE' },
} as const;

export const STORE_USAGE = '[--store DIR|oci://host/prefix] [--require-signature] [--trust-key FILE]...';

export async function storeFromFlags(flags: StoreFlags, opts: { create?: boolean; cwd?: string } = {}): Promise<ReleaseStore> {
  const cwd = opts.cwd ?? process.cwd();
  let spec = flags.store;
  let base = cwd;
  const yaml = join(cwd, 'kiln.yaml');
  const t = existsSync(yaml) ? loadTemplate(yaml) : undefined;
  if (t && !spec) {
    spec = t.config.release.store;
    base = t.dir;
  }
  const trust = await verifierPolicy({
    config: t ? { trust: t.config.release.trust, dir: t.dir } : undefined,
    requireSignature: flags['require-signature'], trustKeys: flags['trust-key'], cwd,
  });
  const keyFile = flags['sign-key'] ? resolve(cwd, flags['sign-key']) : process.env.KILN_SIGNING_KEY || (t ? signKeyOf(t.config.release.sign, t.dir) : undefined);
  let signer: Promise<Signer | undefined> | undefined;
  return openStore(spec ?? DEFAULT_STORE, resolve(base), {
    create: opts.create ?? false, insecure: flags.insecure, trust,
    signer: () => (signer ??= keyFile ? loadSigner(keyFile) : Promise.resolve(undefined)),
    metadataTtlDays: t ? parseTtlDays(t.config.release.metadata_ttl) : undefined,
  });
}

function signKeyOf(sign: { ssh_key?: string; pgp_key?: string } | undefined, dir: string): string | undefined {
  const f = sign?.ssh_key || sign?.pgp_key;
  return f ? resolve(dir, f) : undefined;
}
