/**
 * Signed release metadata. Everything about an image's releases that decides what a user deploys
 * and is not the release itself (channels with their log, revocations, cloud image ids, and the
 * digest of each version) is one document per image, signed with the release key and verified on
 * read. It is TUF's targets, snapshot and timestamp roles folded into one:
 *
 *  - every change writes the whole document again with `seq` one higher, so a store writer cannot
 *    drop one revocation or move one channel without forging a signature;
 *  - each reader remembers the highest `seq` it has seen per store and image (seen.ts), so an older
 *    signed document served again (a rollback) is refused;
 *  - the document expires (`expires`): a reader that never saw a newer one still refuses a document
 *    frozen in the past. `kiln refresh` signs it again;
 *  - a channel moving to an older version carries `allowRollback: true` inside the signed document.
 *
 * The document is the config blob of a manifest tagged `kiln.metadata` in the image's repository;
 * its signature (and, for OpenPGP, the signer's public key) are the manifest's layers. Pure here:
 * the store reads and writes it (release-store.ts).
 */
import { compareVersions } from '../apply/version-order.js';
import { KilnError } from '../errors.js';

export const METADATA_TAG = 'kiln.metadata';
export const METADATA_TYPE = 'kiln.metadata/v1';
/** Days a metadata document is valid when kiln.yaml's release.metadata_ttl does not say. */
export const DEFAULT_METADATA_TTL_DAYS = 90;

export interface ChannelMove {
  time: string;
  version: string;
  digest: string;
  previous: { version: string; digest: string } | null;
  by?: string;
  /** The move goes to an older version on purpose (`kiln channel set --allow-rollback`). */
  allowRollback?: boolean;
}

export interface ChannelEntry { version: string; digest: string; log: ChannelMove[] }
export interface RevocationEntry { digest: string; reason: string; time: string; by?: string }
/** The ids a release's image has in each cloud: cloud → region → id. */
export type CloudIds = Record<string, Record<string, string>>;
export interface CloudEntry { digest: string; ids: CloudIds }

export interface Metadata {
  type: typeof METADATA_TYPE;
  name: string;
  /** One higher with every change. */
  seq: number;
  time: string;
  /** ISO time after which readers refuse the document; null: never (an unsigned store). */
  expires: string | null;
  /** version → manifest digest of every release. */
  releases: Record<string, string>;
  channels: Record<string, ChannelEntry>;
  /** version → revocation. */
  revoked: Record<string, RevocationEntry>;
  /** version → cloud image ids (cloud → region → id). */
  cloud: Record<string, CloudEntry>;
}

export function emptyMetadata(name: string): Metadata {
  return { type: METADATA_TYPE, name, seq: 0, time: '', expires: null, releases: {}, channels: {}, revoked: {}, cloud: {} };
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStr = (v: unknown): v is string => typeof v === 'string';

/** Checks the shape of a parsed document; the message names what is wrong. */
export function checkMetadata(v: unknown, name: string, where: string): Metadata {
  const bad = (what: string) => new KilnError(`${where}: ${what}`, { hint: 'the store was tampered with or written by another tool' });
  if (!isObj(v) || v.type !== METADATA_TYPE) throw bad(`not a ${METADATA_TYPE} document`);
  if (v.name !== name) throw bad(`it describes '${String(v.name)}', not ${name}`);
  if (!Number.isSafeInteger(v.seq) || (v.seq as number) < 1) throw bad('seq must be a positive integer');
  if (!isStr(v.time) || Number.isNaN(Date.parse(v.time))) throw bad('time must be an ISO date');
  if (v.expires !== null && (!isStr(v.expires) || Number.isNaN(Date.parse(v.expires)))) throw bad('expires must be an ISO date or null');
  for (const k of ['releases', 'channels', 'revoked', 'cloud'] as const) if (!isObj(v[k])) throw bad(`${k} must be an object`);
  for (const [ver, d] of Object.entries(v.releases as object)) if (!isStr(d) || !/^sha256:[a-f0-9]{64}$/.test(d)) throw bad(`releases.${ver} must be a sha256 digest`);
  for (const [ch, c] of Object.entries(v.channels as object)) {
    if (!isObj(c) || !isStr(c.version) || !isStr(c.digest) || !Array.isArray(c.log)) throw bad(`channels.${ch} must have version, digest and log`);
  }
  for (const [ver, r] of Object.entries(v.revoked as object)) if (!isObj(r) || !isStr(r.digest) || !isStr(r.reason)) throw bad(`revoked.${ver} must have digest and reason`);
  for (const [ver, c] of Object.entries(v.cloud as object)) if (!isObj(c) || !isStr(c.digest) || !isObj(c.ids)) throw bad(`cloud.${ver} must have digest and ids`);
  return v as unknown as Metadata;
}

/**
 * Why a channel's history is not acceptable: a move to an older version without allowRollback, or
 * a current target that is not the last move. Versions that cannot be ordered are not judged.
 */
export function channelProblems(meta: Metadata): string[] {
  const out: string[] = [];
  for (const [ch, c] of Object.entries(meta.channels)) {
    const last = c.log[c.log.length - 1];
    if (!last || last.version !== c.version || last.digest !== c.digest) out.push(`channel ${meta.name}@${ch} points at ${c.version}, its log ends elsewhere`);
    for (const m of c.log) {
      if (m.previous && !m.allowRollback && (compareVersions(m.version, m.previous.version) ?? 0) < 0) {
        out.push(`channel ${meta.name}@${ch} moved back from ${m.previous.version} to ${m.version} at ${m.time} without --allow-rollback`);
      }
    }
  }
  return out;
}

/** "30d", "12h", "0" (never) → days; undefined → the default. */
export function parseTtlDays(ttl: string | undefined, where = 'release.metadata_ttl'): number {
  if (ttl === undefined) return DEFAULT_METADATA_TTL_DAYS;
  const m = /^(\d+)(d|h)?$/.exec(ttl.trim());
  if (!m) throw new KilnError(`${where}: '${ttl}' is not a duration`, { hint: 'write a number of days (90d) or hours (36h); 0 means the metadata never expires' });
  return m[2] === 'h' ? Number(m[1]) / 24 : Number(m[1]);
}
