/**
 * The verifier's trust policy. It is the reader's, never the store's: whoever can write a store
 * must not be able to add a key or drop the requirement. It is the union of
 *
 *  - kiln.yaml's release.trust, when the command runs in an image repository;
 *  - the user's trust file: $KILN_TRUST_CONFIG, else $XDG_CONFIG_HOME/kiln/trust.yaml, else
 *    ~/.config/kiln/trust.yaml (`require_signature: true`, `keys: [file or key text, …]`);
 *  - flags: --require-signature, --trust-key FILE (repeatable); for `kiln resolve --terraform`
 *    the query's "require_signature" and "trust_keys" (comma-separated files).
 *
 * Any source can require signatures; keys from every source are trusted.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { LineCounter, parseDocument, isMap, isScalar, isSeq, type Node } from 'yaml';
import { locateYamlErrors } from '../yaml-errors.js';
import { KilnError } from '../errors.js';
import type { TrustPolicy } from './release-store.js';
import { keyKind, loadTrustedKey, type TrustedKey } from './signing.js';

export interface PolicyInputs {
  /** kiln.yaml's release.trust and the directory its key paths are relative to. */
  config?: { trust?: { require_signature?: boolean; keys?: string[] }; dir: string };
  requireSignature?: boolean;
  /** Key files from flags or the Terraform query (relative to cwd). */
  trustKeys?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export function userTrustFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.KILN_TRUST_CONFIG) return env.KILN_TRUST_CONFIG;
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'kiln', 'trust.yaml');
}

/** The user's trust file, or null when there is none. Errors name the file and line. */
export async function readUserTrust(file: string): Promise<TrustPolicy | null> {
  if (!existsSync(file)) return null;
  const text = readFileSync(file, 'utf8');
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const at = (n: Node | null | undefined) => {
    const pos = n?.range ? lines.linePos(n.range[0]) : undefined;
    return { file, line: pos?.line, column: pos?.col };
  };
  if (doc.errors.length) {
    const [p] = locateYamlErrors(text, doc.errors, lines);
    throw new KilnError(p.message, { where: { file, line: p.line, column: p.column } });
  }
  const policy: TrustPolicy = { requireSignature: false, keys: [] };
  if (doc.contents === null) return policy;
  if (!isMap(doc.contents)) throw new KilnError('expected a mapping with require_signature and keys', { where: at(doc.contents) });
  for (const item of doc.contents.items) {
    const key = isScalar(item.key) ? String(item.key.value) : '';
    const value = item.value as Node | null;
    if (key === 'require_signature') {
      if (!isScalar(value) || typeof value.value !== 'boolean') throw new KilnError('require_signature must be true or false', { where: at(value ?? (item.key as Node)) });
      policy.requireSignature = value.value;
    } else if (key === 'keys') {
      if (!isSeq(value)) throw new KilnError('keys must be a list of public key files or public keys', { where: at(value ?? (item.key as Node)) });
      for (const k of value.items) {
        if (!isScalar(k) || typeof k.value !== 'string') throw new KilnError('each key is a file name or a public key (text)', { where: at(k as Node) });
        const inline = keyKind(k.value);
        const pos = at(k as Node);
        if (inline) policy.keys.push({ kind: inline, text: k.value, source: `${file}:${pos.line}` });
        else {
          const keyFile = resolve(dirname(file), k.value);
          if (!existsSync(keyFile)) throw new KilnError(`key file ${keyFile} does not exist`, { where: pos, hint: 'a key is a public key file (relative to this file) or the key itself' });
          policy.keys.push(await loadTrustedKey(keyFile));
        }
      }
    } else {
      throw new KilnError(`unknown setting '${key}'`, { where: at(item.key as Node), hint: 'the trust file has require_signature and keys' });
    }
  }
  return policy;
}

/** The union of every source's policy (see the module comment). */
export async function verifierPolicy(inputs: PolicyInputs): Promise<TrustPolicy> {
  const env = inputs.env ?? process.env;
  const policy: TrustPolicy = { requireSignature: Boolean(inputs.requireSignature), keys: [] };
  const add = (keys: TrustedKey[]) => {
    for (const k of keys) if (!policy.keys.some((x) => x.text.trim() === k.text.trim())) policy.keys.push(k);
  };
  if (inputs.config) {
    policy.requireSignature ||= inputs.config.trust?.require_signature === true;
    for (const k of inputs.config.trust?.keys ?? []) add([await loadTrustedKey(resolve(inputs.config.dir, k))]);
  }
  const user = await readUserTrust(userTrustFile(env));
  if (user) {
    policy.requireSignature ||= user.requireSignature;
    add(user.keys);
  }
  for (const k of inputs.trustKeys ?? []) add([await loadTrustedKey(resolve(inputs.cwd ?? process.cwd(), k))]);
  return policy;
}

/** Which key signed what a command used, for its last line: "signed by X" or why nothing vouches for it. */
export function signedByLine(signers: string[], policy: TrustPolicy): string {
  if (signers.length) return `signed by ${signers.join(', ')}`;
  return policy.requireSignature ? 'unsigned (refused)' : 'unsigned (no signature is required: --require-signature or ~/.config/kiln/trust.yaml requires one)';
}
