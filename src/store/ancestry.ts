/**
 * Release ancestry: a child release records the release it was built on (ReleaseRecord.parents),
 * and everything a parent is (revoked, superseded) concerns its descendants. The walk up the chain is
 * pure over a lookup, so the store (release-store.ts) supplies the reads and the tests a fake one.
 */
import { KilnError } from '../errors.js';
import { isDigest, isValidTag } from './oci.js';
import type { ReleaseParent, ReleaseRecord } from './record.js';

/** A parent as a record holds it: older records (before ancestry) may lack the digest. */
export interface RecordedParent {
  name: string;
  version: string;
  digest?: string;
  channel?: string;
}

/** The nearest revoked release up a chain. */
export interface RevokedAncestor {
  name: string;
  version: string;
  digest: string;
  reason: string;
}

/** One release of a chain, as the store found it. */
export interface AncestorNode {
  name: string;
  version: string;
  digest: string;
  record: ReleaseRecord;
  revocation?: { reason: string };
  /** Why this release's revocation state cannot be trusted (its image's metadata has problems). */
  problem?: string;
}

/** Finds a release by name and digest, or by name and version for a parent recorded without digest; null when the store lacks it. */
export type AncestorLookup = (ref: { name: string; version?: string; digest?: string }) => Promise<AncestorNode | null>;

export interface Ancestry {
  /** From the release the walk started at up to the root, each with the channel its child went through. */
  chain: ReleaseParent[];
  /** The nearest revoked release in the chain. */
  revoked?: RevokedAncestor;
  /** A parent a record names that this store does not hold: the walk stopped there. */
  missing?: RecordedParent;
  /** Why the chain cannot be trusted in full: a malformed parent entry, a cycle, an ancestor whose revocation state is unknown. */
  problem?: string;
}

/**
 * A chain longer than this is not one Kiln built; the bound keeps a hostile registry from making a
 * reader follow parents for ever.
 */
export const MAX_ANCESTRY_DEPTH = 64;

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/**
 * The parent a record names, read leniently: records older than ancestry have no `parents` or an
 * empty one, and a digest-less entry is looked up by its (immutable) version tag. An entry that could
 * not have been written by a build is a problem, never a lookup: its name reaches paths and URLs.
 */
export function recordedParent(record: ReleaseRecord): { parent?: RecordedParent; problem?: string } {
  const parents: unknown = (record as { parents?: unknown }).parents;
  if (!Array.isArray(parents) || parents.length === 0) return {};
  const where = `${record.name}@${record.version}`;
  if (parents.length > 1) return { problem: `${where} records ${parents.length} parents; a child release is built on exactly one` };
  const p = parents[0] as Partial<Record<keyof RecordedParent, unknown>> | null;
  const name = p?.name;
  const version = p?.version;
  if (typeof name !== 'string' || !NAME_RE.test(name) || typeof version !== 'string' || !isValidTag(version)) {
    return { problem: `${where} records a parent that is not a release reference: ${JSON.stringify(p)}` };
  }
  const { digest, channel } = p ?? {};
  if (digest !== undefined && (typeof digest !== 'string' || !isDigest(digest))) {
    return { problem: `${where} records parent ${name}@${version} with digest ${JSON.stringify(digest)}, which is not sha256:<64 hex digits>` };
  }
  if (channel !== undefined && (typeof channel !== 'string' || !isValidTag(channel))) {
    return { problem: `${where} records parent ${name}@${version} through channel ${JSON.stringify(channel)}, which is not a channel name` };
  }
  return { parent: { name, version, ...(digest !== undefined ? { digest } : {}), ...(channel !== undefined ? { channel } : {}) } };
}

/** `name@version` of a parent, for listings and messages. */
export function parentRef(p: { name: string; version: string }): string {
  return `${p.name}@${p.version}`;
}

/**
 * Walks from `start` up through each recorded parent to the root. Never throws for what the store
 * holds: a release it cannot read, a cycle or a chain too long ends the walk with a problem, so a
 * listing shows it and resolve decides.
 */
export async function walkAncestry(start: { name: string; version?: string; digest?: string; channel?: string }, lookup: AncestorLookup): Promise<Ancestry> {
  const out: Ancestry = { chain: [] };
  const seen = new Set<string>();
  let next: (typeof start) | undefined = start;
  while (next) {
    if (out.chain.length >= MAX_ANCESTRY_DEPTH) {
      out.problem ??= `the chain of ${parentRef(out.chain[0])} is longer than ${MAX_ANCESTRY_DEPTH} releases`;
      break;
    }
    let node: AncestorNode | null;
    try {
      node = await lookup(next);
    } catch (e) {
      if (!(e instanceof KilnError)) throw e;
      out.problem ??= `cannot read ${next.name}@${next.version ?? next.digest}: ${e.message}`;
      break;
    }
    if (!node) {
      if (next.version !== undefined) out.missing = { name: next.name, version: next.version, ...(next.digest ? { digest: next.digest } : {}), ...(next.channel ? { channel: next.channel } : {}) };
      break;
    }
    // Digests are content addresses, so a cycle needs a tampered store; it must still end the walk.
    if (seen.has(node.digest)) {
      out.problem ??= `${parentRef(node)} is its own ancestor (a cycle in the recorded parents)`;
      break;
    }
    seen.add(node.digest);
    out.chain.push({ name: node.name, version: node.version, digest: node.digest, ...(next.channel ? { channel: next.channel } : {}) });
    if (node.revocation && !out.revoked) out.revoked = { name: node.name, version: node.version, digest: node.digest, reason: node.revocation.reason };
    if (node.problem) out.problem ??= `cannot tell whether ${parentRef(node)} is revoked: ${node.problem}`;
    const rp = recordedParent(node.record);
    if (rp.problem) {
      out.problem ??= rp.problem;
      break;
    }
    next = rp.parent;
  }
  return out;
}

/** The ancestors of a release (its chain without itself), walked from the parent its record names. */
export async function ancestorsOf(record: ReleaseRecord, lookup: AncestorLookup): Promise<Ancestry & { parent?: RecordedParent }> {
  const rp = recordedParent(record);
  if (rp.problem) return { chain: [], problem: rp.problem };
  if (!rp.parent) return { chain: [] };
  return { ...(await walkAncestry(rp.parent, lookup)), parent: rp.parent };
}
