/**
 * A vendor's checksum file (SHA256SUMS, SHA512SUMS) and the OpenPGP signature that makes it worth
 * reading. Pure apart from openpgp.js: tests feed it bytes and throwaway keys.
 *
 * A checksum file proves nothing by itself (whoever serves it chooses it), so Kiln reads one only
 * after a key pinned in kiln.yaml has verified it: a detached signature (SHA512SUMS.sign, .gpg,
 * .asc) over its exact bytes, or a clear-signed file whose signed text is then the only text read.
 */
import * as openpgp from 'openpgp';
import { KilnError } from '../errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

export interface ChecksumEntry { name: string; algorithm: DigestAlgorithm; hex: string; line: number }

const HEX_LENGTH: Record<number, DigestAlgorithm> = { 64: 'sha256', 128: 'sha512' };

/**
 * The entries of a checksum file: GNU coreutils lines (`<hex>  <name>` or `<hex> *<name>`) and BSD
 * tag lines (`SHA512 (<name>) = <hex>`). Blank and comment lines are skipped; any other line is an
 * error naming it, so a file that is not a checksum file at all is never read as an empty one.
 */
export function parseChecksums(text: string, shown: string): ChecksumEntry[] {
  const entries: ChecksumEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i].replace(/\r$/, '');
    if (!l.trim() || l.startsWith('#')) continue;
    const gnu = /^([0-9a-fA-F]+) [ *](.+)$/.exec(l);
    const bsd = /^(SHA256|SHA512) \((.+)\) = ([0-9a-fA-F]+)$/.exec(l);
    const hex = gnu ? gnu[1] : bsd ? bsd[3] : undefined;
    const name = gnu ? gnu[2] : bsd ? bsd[2] : undefined;
    const algorithm = hex ? HEX_LENGTH[hex.length] : undefined;
    if (!hex || !name || !algorithm || (bsd && bsd[1].toLowerCase() !== algorithm)) {
      throw new KilnError(`not a SHA-256 or SHA-512 checksum line: ${JSON.stringify(l.slice(0, 120))}`, {
        where: { file: shown, line: i + 1 }, hint: 'expected "<hex digest>  <file name>" (sha256sum/sha512sum output) or "SHA512 (<file name>) = <hex digest>"',
      });
    }
    entries.push({ name: name.replace(/^\.\//, ''), algorithm, hex: hex.toLowerCase(), line: i + 1 });
  }
  return entries;
}

/** The one digest the checksum file gives for `name` (its base name in the file); an absent or contradictory entry is an error. */
export function checksumFor(entries: ChecksumEntry[], name: string, shown: string): ChecksumEntry {
  const found = entries.filter((e) => e.name === name || e.name.split('/').pop() === name);
  if (!found.length) {
    throw new KilnError(`the checksum file lists no checksum for ${name}`, {
      where: { file: shown }, detail: `it lists: ${entries.slice(0, 10).map((e) => e.name).join(', ')}${entries.length > 10 ? ', …' : ''}`,
      hint: 'check source.image.url (its file name is looked up in the checksum file) or set source.image.checksum_name',
    });
  }
  const distinct = new Set(found.map((e) => `${e.algorithm}:${e.hex}`));
  const strongest = found.find((e) => e.algorithm === 'sha512') ?? found[0];
  if ([...distinct].filter((d) => d.startsWith(strongest.algorithm)).length > 1) {
    throw new KilnError(`the checksum file gives ${name} more than one ${strongest.algorithm} digest (lines ${found.map((e) => e.line).join(', ')})`, { where: { file: shown } });
  }
  return strongest;
}

export interface PinnedKey { file: string; bytes: Uint8Array }

/** Every public key in the pinned key files (armored or binary, one or many per file). */
export async function readPinnedKeys(keys: PinnedKey[]): Promise<openpgp.PublicKey[]> {
  const out: openpgp.PublicKey[] = [];
  for (const k of keys) {
    const text = Buffer.from(k.bytes).toString('latin1');
    try {
      const read = text.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----')
        ? await openpgp.readKeys({ armoredKeys: Buffer.from(k.bytes).toString('utf8') })
        : await openpgp.readKeys({ binaryKeys: k.bytes });
      out.push(...read.map((key) => key.toPublic()));
    } catch (e) {
      throw new KilnError(`${k.file} is not an OpenPGP public key: ${(e as Error).message}`, { where: { file: k.file }, hint: 'source.image.keys lists the vendor\'s signing keys as exported by `gpg --export [--armor] <fingerprint>`' });
    }
  }
  if (!out.length) throw new KilnError('source.image.keys names no OpenPGP key', { hint: 'list at least one key file' });
  return out;
}

export interface SignedChecksums {
  /** The text the signature covers: the file itself, or a clear-signed file's signed text. */
  text: string;
  /** Fingerprint of the pinned key (primary) whose signature verified. */
  signer: string;
}

function cleartextSigned(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.subarray(0, 64)).toString('latin1').startsWith('-----BEGIN PGP SIGNED MESSAGE-----');
}

/**
 * Verifies a checksum file with the pinned keys: by its detached signature when one is given, else
 * as a clear-signed file. A signature by any other key, or over other bytes, is refused.
 */
export async function verifyChecksumFile(o: { file: Uint8Array; shown: string; signature?: Uint8Array; signatureShown?: string; keys: openpgp.PublicKey[] }): Promise<SignedChecksums> {
  const refuse = (why: string, detail?: string): never => {
    throw new KilnError(why, {
      where: { file: o.shown }, detail,
      hint: 'the checksum file must be signed by a key in source.image.keys; a changed file, a signature by another key or no signature at all is refused',
    });
  };
  let verification: openpgp.VerifyMessageResult<string> | openpgp.VerifyMessageResult<Uint8Array>;
  let text: string;
  try {
    if (o.signature) {
      const sigBytes = o.signature;
      const armored = Buffer.from(sigBytes.subarray(0, 64)).toString('latin1').includes('-----BEGIN PGP SIGNATURE-----');
      const signature = armored
        ? await openpgp.readSignature({ armoredSignature: Buffer.from(sigBytes).toString('utf8') })
        : await openpgp.readSignature({ binarySignature: sigBytes });
      const message = await openpgp.createMessage({ binary: o.file });
      verification = await openpgp.verify({ message, signature, verificationKeys: o.keys, format: 'binary' });
      text = Buffer.from(o.file).toString('utf8');
    } else if (cleartextSigned(o.file)) {
      const message = await openpgp.readCleartextMessage({ cleartextMessage: Buffer.from(o.file).toString('utf8') });
      verification = await openpgp.verify({ message, verificationKeys: o.keys });
      text = message.getText();
    } else {
      return refuse('no signature: source.image.signature names none and the file is not clear-signed');
    }
  } catch (e) {
    return refuse(`unreadable OpenPGP data (${(e as Error).message})`);
  }
  const problems: string[] = [];
  for (const s of verification.signatures) {
    try {
      await s.verified;
      const key = o.keys.find((k) => k.getKeyIDs().some((id) => id.equals(s.keyID)));
      if (key) return { text, signer: key.getFingerprint().toUpperCase() };
      problems.push(`signature by key ${s.keyID.toHex().toUpperCase()}, which is not pinned`);
    } catch (e) {
      problems.push(`signature by key ${s.keyID.toHex().toUpperCase()}: ${(e as Error).message}`);
    }
  }
  return refuse(`no valid signature by a pinned key${o.signatureShown ? ` in ${o.signatureShown}` : ''}`, problems.join('\n') || 'the signature holds no signature packets');
}
