/**
 * What the release store needs from a place that holds OCI content: an image layout directory
 * (layout.ts) or a registry (registry.ts). Repositories are image names; tags are versions.
 * Every read is verified against its digest by the implementation.
 */
import { KilnError } from '../errors.js';
import type { Progress } from './blobio.js';
import type { Descriptor } from './oci.js';

export interface BlobSource {
  digest: string;
  size: number;
  /** A file holding the blob (streamed, never loaded whole), or the bytes themselves. */
  file?: string;
  bytes?: Buffer;
  /**
   * A copy this backend made in its own scratch with stageFile (hashed while it copied): moved into
   * place with no second read. Only a backend that staged it accepts it.
   */
  staged?: string;
}

/** A file copied into a store's scratch ahead of its publish, with the digest and size hashed on the way. */
export interface StagedBlob { path: string; digest: string; size: number }

export interface PutBlobOptions {
  onProgress?: Progress;
  /** Stops a long upload or copy when aborted (an interrupted build). */
  signal?: AbortSignal;
}

/** What a publish changed before its tag: undone when it is interrupted or fails. */
export interface PublishChanges {
  /** Blobs the publish wrote (they were not in the store before). */
  blobs: string[];
  /** Bookkeeping tags it moved (the referrers index of a signature), with what they pointed at before. */
  tags: { repo: string; tag: string; previous: Descriptor | null }[];
}

export interface StoredManifest {
  bytes: Buffer;
  digest: string;
  mediaType: string;
}

export interface StoreBackend {
  /** Where the store is, for messages: a directory or oci://host/prefix. */
  readonly location: string;
  readonly remote: boolean;
  listRepositories(): Promise<string[]>;
  listTags(repo: string): Promise<string[]>;
  hasBlob(repo: string, digest: string): Promise<boolean>;
  /** Store a blob; the content is hashed on the way and refused when it does not match src.digest. */
  putBlob(repo: string, src: BlobSource, opts?: PutBlobOptions): Promise<void>;
  /**
   * Copy a file into the store's own scratch now, hashed on the way, so that a later putBlob of it
   * only renames (a local store stages a release's artifacts while the formats step still runs).
   * Absent where staging saves nothing (a registry uploads at publish).
   */
  stageFile?(file: string, opts?: PutBlobOptions): Promise<StagedBlob>;
  /** Remove a staged copy that will not be published (a failed build). */
  discardStaged?(path: string): Promise<void>;
  /** Read a small blob (JSON, signatures), verified. */
  readBlob(repo: string, desc: Descriptor): Promise<Buffer>;
  /** Read a blob through, hashing it: throws DigestMismatchError naming it when it differs. */
  verifyBlob(repo: string, desc: Descriptor, onProgress?: Progress): Promise<void>;
  /** Copy a blob into a local file, verified while copying (pull). */
  downloadBlob(repo: string, desc: Descriptor, dest: string, onProgress?: Progress): Promise<void>;
  /** A user-facing location of a blob: a path (layout) or repo@digest reference (registry). */
  blobLocation(repo: string, digest: string): string;
  /** A manifest by tag or digest, verified against the digest; null when absent. */
  getManifest(repo: string, ref: string): Promise<StoredManifest | null>;
  /** Store a manifest by digest only (no tag). Returns its digest. */
  putManifest(repo: string, bytes: Buffer, mediaType: string): Promise<string>;
  /**
   * Tag a new manifest; refused with TagExistsError when the tag exists (atomically for a layout).
   * An aborted signal stops it before the tag is written (a layout checks under its lock).
   */
  createTag(repo: string, tag: string, bytes: Buffer, mediaType: string, opts?: { signal?: AbortSignal }): Promise<string>;
  /**
   * Move a mutable tag (channels, referrer indexes): fn gets the current manifest (or null) and
   * returns the new one, or null to leave it. Serialised by the lock in a layout; last writer wins
   * in a registry, which has no compare-and-swap.
   */
  updateTag(repo: string, tag: string, fn: (current: StoredManifest | null) => Promise<{ bytes: Buffer; mediaType: string } | null>): Promise<void>;
  /** Referrers from the registry's referrers API; null when the store has no such API. */
  nativeReferrers(repo: string, digest: string): Promise<Descriptor[] | null>;
  /** True when putManifest of a manifest with a subject already made it discoverable (OCI-Subject). */
  readonly indexesReferrers: boolean;
  /**
   * Undo a publish that did not reach its tag (layout only; a registry keeps the untagged blobs until
   * its garbage collection, and they name no release).
   */
  rollback?(changes: PublishChanges): Promise<void>;
  close?(): Promise<void>;
}

export class TagExistsError extends KilnError {
  constructor(repo: string, tag: string, location: string) {
    super(`${repo}@${tag} already exists in ${location}: releases are immutable`, {
      hint: 'a fix is a new version: tag a new release (git tag release-X.Y.Z) and build again',
    });
    this.name = 'TagExistsError';
  }
}
