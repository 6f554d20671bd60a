/**
 * Release signatures over the release manifest digest, with an SSH key (`ssh-keygen -Y`, namespace
 * kiln-release) or an OpenPGP key (openpgp.js). The signed payload is the text
 * "kiln-release <name>@<version> <manifest digest>\n", so a signature cannot be moved to another
 * version even of identical content.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { KilnError } from '../errors.js';
import { exec, output } from '../exec.js';
import { MT } from './oci.js';

export const SSH_NAMESPACE = 'kiln-release';

export function signaturePayload(name: string, version: string, digest: string): Buffer {
  return Buffer.from(`kiln-release ${name}@${version} ${digest}\n`);
}

export type KeyKind = 'ssh' | 'pgp';

export interface SignatureBlob {
  kind: KeyKind;
  mediaType: string;
  signature: Buffer;
  /** The signer's public key (PGP only: an SSH signature embeds it). */
  publicKey?: string;
  /** Fingerprint and name (comment / user id), informational: verification recomputes it. */
  signer: string;
}

export interface Signer {
  kind: KeyKind;
  /** Fingerprint and comment / user id of the key. */
  identity: string;
  sign(payload: Buffer): Promise<SignatureBlob>;
}

export interface TrustedKey {
  kind: KeyKind;
  text: string;
  /** Where the key came from (file), for messages. */
  source: string;
}

export interface SignatureCheck {
  valid: boolean;
  trusted: boolean;
  signer: string;
  problem?: string;
}

async function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-sig-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function keyKind(text: string): KeyKind | null {
  if (/-----BEGIN PGP (PRIVATE|PUBLIC) KEY BLOCK-----/.test(text)) return 'pgp';
  if (/-----BEGIN OPENSSH PRIVATE KEY-----/.test(text) || /^(ssh-|ecdsa-|sk-)/m.test(text.trim())) return 'ssh';
  return null;
}

/** "SHA256:… comment (ED25519)" for an SSH key file. */
async function sshFingerprint(file: string): Promise<string> {
  const line = await output('ssh-keygen', ['-l', '-f', file]);
  const m = /^\d+ (\S+) (.*) \(([A-Z0-9-]+)\)$/.exec(line);
  return m ? `${m[1]} ${m[2]} (${m[3]})` : line;
}

function pgpIdentity(key: openpgp.Key): string {
  return `${key.getFingerprint().toUpperCase()} ${key.getUserIDs()[0] ?? ''}`.trim();
}

/** A signer from a private key file (SSH or armored OpenPGP); the passphrase of a PGP key from KILN_SIGNING_PASSPHRASE. */
export async function loadSigner(keyFile: string, passphrase = process.env.KILN_SIGNING_PASSPHRASE): Promise<Signer> {
  let text: string;
  try {
    text = await readFile(keyFile, 'utf8');
  } catch (e) {
    throw new KilnError(`cannot read signing key ${keyFile}: ${(e as Error).message}`, { hint: 'set release.sign in kiln.yaml or KILN_SIGNING_KEY to a private key file' });
  }
  const kind = keyKind(text);
  if (kind === 'ssh') {
    const identity = await sshFingerprint(keyFile);
    return {
      kind, identity,
      async sign(payload) {
        const r = await exec('ssh-keygen', ['-Y', 'sign', '-q', '-f', keyFile, '-n', SSH_NAMESPACE], { input: payload, passEnv: ['SSH_AUTH_SOCK'], hint: 'the SSH signing key must be unencrypted or loaded in ssh-agent' });
        return { kind, mediaType: MT.sshSignature, signature: Buffer.from(r.stdout), signer: identity };
      },
    };
  }
  if (kind === 'pgp') {
    let key: openpgp.PrivateKey;
    try {
      key = await openpgp.readPrivateKey({ armoredKey: text });
      if (!key.isDecrypted()) {
        if (!passphrase) throw new KilnError(`OpenPGP signing key ${keyFile} is encrypted and KILN_SIGNING_PASSPHRASE is not set`, { hint: 'set KILN_SIGNING_PASSPHRASE to its passphrase' });
        key = await openpgp.decryptKey({ privateKey: key, passphrase });
      }
    } catch (e) {
      if (e instanceof KilnError) throw e;
      throw new KilnError(`cannot use OpenPGP signing key ${keyFile}: ${(e as Error).message}`);
    }
    const identity = pgpIdentity(key);
    const publicKey = key.toPublic().armor();
    return {
      kind, identity,
      async sign(payload) {
        const message = await openpgp.createMessage({ binary: new Uint8Array(payload) });
        const sig = await openpgp.sign({ message, signingKeys: key, detached: true, format: 'armored' });
        return { kind, mediaType: MT.pgpSignature, signature: Buffer.from(sig), publicKey, signer: identity };
      },
    };
  }
  throw new KilnError(`${keyFile} is neither an OpenSSH private key nor an armored OpenPGP private key`);
}

export async function loadTrustedKey(file: string): Promise<TrustedKey> {
  const text = await readFile(file, 'utf8').catch((e: Error) => { throw new KilnError(`cannot read trusted key ${file}: ${e.message}`); });
  const kind = keyKind(text);
  if (!kind) throw new KilnError(`${file} is neither an SSH public key nor an armored OpenPGP public key`);
  return { kind, text, source: file };
}

export async function checkSignature(sig: SignatureBlob, payload: Buffer, trusted: TrustedKey[]): Promise<SignatureCheck> {
  return sig.kind === 'ssh' ? checkSsh(sig, payload, trusted.filter((k) => k.kind === 'ssh')) : checkPgp(sig, payload, trusted.filter((k) => k.kind === 'pgp'));
}

async function checkSsh(sig: SignatureBlob, payload: Buffer, trusted: TrustedKey[]): Promise<SignatureCheck> {
  return withTmp(async (dir) => {
    const sigFile = join(dir, 'release.sig');
    await writeFile(sigFile, sig.signature);
    // Cryptographic validity against the key embedded in the signature, and its fingerprint.
    const nov = await exec('ssh-keygen', ['-Y', 'check-novalidate', '-n', SSH_NAMESPACE, '-s', sigFile], { input: payload, allowFailure: true });
    const fp = /key (SHA256:\S+)/.exec(nov.stdout + nov.stderr)?.[1] ?? 'unknown key';
    if (nov.code !== 0) return { valid: false, trusted: false, signer: fp, problem: (nov.stderr || nov.stdout).trim() };
    const allowed = trusted.map((k, i) => `trusted-${i} namespaces="${SSH_NAMESPACE}" ${k.text.trim().split(/\s+/).slice(0, 2).join(' ')}`);
    const comment = (k: TrustedKey) => k.text.trim().split(/\s+/).slice(2).join(' ') || k.source;
    if (!allowed.length) return { valid: true, trusted: false, signer: fp };
    const allowedFile = join(dir, 'allowed_signers');
    await writeFile(allowedFile, allowed.join('\n') + '\n');
    const fpr = await exec('ssh-keygen', ['-Y', 'find-principals', '-s', sigFile, '-f', allowedFile], { allowFailure: true });
    const principal = fpr.code === 0 ? fpr.stdout.trim().split('\n')[0] : '';
    if (!principal) return { valid: true, trusted: false, signer: fp };
    const v = await exec('ssh-keygen', ['-Y', 'verify', '-f', allowedFile, '-I', principal, '-n', SSH_NAMESPACE, '-s', sigFile], { input: payload, allowFailure: true });
    const key = trusted[Number(principal.slice('trusted-'.length))];
    return { valid: v.code === 0, trusted: v.code === 0, signer: `${fp} ${comment(key)}`, problem: v.code === 0 ? undefined : v.stderr.trim() };
  });
}

async function checkPgp(sig: SignatureBlob, payload: Buffer, trusted: TrustedKey[]): Promise<SignatureCheck> {
  let signature: openpgp.Signature;
  try {
    signature = await openpgp.readSignature({ armoredSignature: sig.signature.toString('utf8') });
  } catch (e) {
    return { valid: false, trusted: false, signer: sig.signer, problem: `unreadable OpenPGP signature: ${(e as Error).message}` };
  }
  const message = await openpgp.createMessage({ binary: new Uint8Array(payload) });
  const tryKeys = async (keys: openpgp.PublicKey[]): Promise<{ key: openpgp.PublicKey; ok: boolean; problem?: string } | null> => {
    for (const key of keys) {
      const { signatures } = await openpgp.verify({ message, signature, verificationKeys: key });
      for (const s of signatures) {
        if (!key.getKeys(s.keyID).length) continue;
        try {
          await s.verified;
          return { key, ok: true };
        } catch (e) {
          return { key, ok: false, problem: (e as Error).message };
        }
      }
    }
    return null;
  };
  const trustedKeys: openpgp.PublicKey[] = [];
  for (const k of trusted) trustedKeys.push(...(await openpgp.readKeys({ armoredKeys: k.text })));
  const t = await tryKeys(trustedKeys);
  if (t) return { valid: t.ok, trusted: t.ok, signer: pgpIdentity(t.key), problem: t.problem };
  if (sig.publicKey) {
    const embedded = await openpgp.readKeys({ armoredKeys: sig.publicKey }).catch(() => [] as openpgp.PublicKey[]);
    const e = await tryKeys(embedded);
    if (e) return { valid: e.ok, trusted: false, signer: pgpIdentity(e.key), problem: e.problem };
  }
  return { valid: false, trusted: false, signer: sig.signer, problem: 'no public key for this signature' };
}
