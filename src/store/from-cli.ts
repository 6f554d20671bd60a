/**
 * The store a command works on: --store, else kiln.yaml's release.store when kiln.yaml is in the
 * current directory, else .kiln/store. The trust policy comes from kiln.yaml and the store.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadTemplate } from '../template/load.js';
import { DEFAULT_STORE, openStore, trustFromConfig } from './index.js';
import type { ReleaseStore, TrustPolicy } from './release-store.js';

export interface StoreFlags {
  store?: string;
  insecure?: boolean;
}

/** The option table every store command shares (spread into parse()). */
export const storeOptions = {
  store: { type: 'string' },
  insecure: { type: 'boolean' },
} as const;

export async function storeFromFlags(flags: StoreFlags, opts: { create?: boolean; cwd?: string } = {}): Promise<ReleaseStore> {
  const cwd = opts.cwd ?? process.cwd();
  let spec = flags.store;
  let base = cwd;
  let trust: TrustPolicy | undefined;
  const yaml = join(cwd, 'kiln.yaml');
  if (existsSync(yaml)) {
    const t = loadTemplate(yaml);
    trust = await trustFromConfig(t.config.release.trust, t.dir);
    if (!spec) {
      spec = t.config.release.store;
      base = t.dir;
    }
  }
  return openStore(spec ?? DEFAULT_STORE, resolve(base), { create: opts.create ?? false, insecure: flags.insecure, trust });
}
