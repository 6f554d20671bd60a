/**
 * OCI data structures Kiln writes and reads, as pure functions: media types, descriptors,
 * manifests and indexes, canonical JSON bytes and digests. No I/O here, so every byte a release
 * is made of can be tested against the image-spec.
 */
import { createHash } from 'node:crypto';
import { KilnError } from '../errors.js';

export const MT = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  empty: 'application/vnd.oci.empty.v1+json',
  release: 'application/vnd.kiln.release.v1+json',
  sbom: 'application/spdx+json',
  provenance: 'application/vnd.in-toto+json',
  signature: 'application/vnd.kiln.signature.v1+json',
  metadata: 'application/vnd.kiln.metadata.v1+json',
  sshSignature: 'application/vnd.kiln.signature.ssh',
  pgpSignature: 'application/pgp-signature',
} as const;

export const ANN = {
  title: 'org.opencontainers.image.title',
  version: 'org.opencontainers.image.version',
  created: 'org.opencontainers.image.created',
  revision: 'org.opencontainers.image.revision',
  source: 'org.opencontainers.image.source',
  refName: 'org.opencontainers.image.ref.name',
  description: 'org.opencontainers.image.description',
  /** The release a child was built on (image-spec annotations.md): `name@version` and its manifest digest. */
  baseName: 'org.opencontainers.image.base.name',
  baseDigest: 'org.opencontainers.image.base.digest',
  format: 'dev.kiln.format',
  name: 'dev.kiln.name',
  signer: 'dev.kiln.signer',
} as const;

export { formatMediaType } from '../formats/registry.js';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: typeof MT.manifest;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType: typeof MT.index;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

/** The empty JSON blob `{}` the image-spec defines for artifacts without a config. */
export const EMPTY_BLOB = Buffer.from('{}');
export const EMPTY_DESCRIPTOR: Descriptor = { mediaType: MT.empty, digest: sha256Digest(EMPTY_BLOB), size: 2 };

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${sha256Hex(data)}`;
}

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

export function digestHex(digest: string): string {
  if (!isDigest(digest)) throw new KilnError(`expected a digest sha256:<64 hex digits>, got ${JSON.stringify(digest)}`);
  return digest.slice('sha256:'.length);
}

/** JSON with sorted keys and no whitespace: the same value always gives the same bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortKeys(x);
    }
    return out;
  }
  return v;
}

export function jsonBlob(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value));
}

export function descriptorOf(mediaType: string, bytes: Buffer, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType, digest: sha256Digest(bytes), size: bytes.length, ...extra };
}

/** Manifest bytes are canonical JSON too, so identical inputs give an identical manifest digest. */
export function manifestBytes(m: ImageManifest | ImageIndex): Buffer {
  return jsonBlob(m);
}

export function parseManifest(bytes: Buffer, where: string): ImageManifest {
  const m = parseJson(bytes, where) as ImageManifest;
  if (m?.schemaVersion !== 2 || !m.config || !Array.isArray(m.layers)) throw new KilnError(`${where}: expected an OCI image manifest (schemaVersion 2 with a config and layers)`, { hint: 'the store holds something Kiln did not write; check it with `kiln verify`' });
  return m;
}

export function parseIndex(bytes: Buffer, where: string): ImageIndex {
  const m = parseJson(bytes, where) as ImageIndex;
  if (m?.schemaVersion !== 2 || !Array.isArray(m.manifests)) throw new KilnError(`${where}: expected an OCI image index (schemaVersion 2 with manifests)`, { hint: 'the store holds something Kiln did not write; check it with `kiln verify`' });
  return m;
}

export function parseJson(bytes: Buffer, where: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new KilnError(`${where}: expected JSON: ${(e as Error).message}`);
  }
}

/** An ISO 8601 UTC timestamp from SOURCE_DATE_EPOCH (seconds), without milliseconds. */
export function isoFromEpoch(sde: number): string {
  return new Date(sde * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * A manifest that refers to a release (signature, revocation, cloud ids): an artifact with the
 * release as `subject`, so registries with the referrers API index it and others use the
 * referrers tag schema (tag `sha256-<hex>` → index of referrers).
 */
export function referrerManifest(opts: {
  artifactType: string;
  subject: Descriptor;
  config?: { mediaType: string; bytes: Buffer };
  layers?: Descriptor[];
  annotations?: Record<string, string>;
}): ImageManifest {
  return {
    schemaVersion: 2,
    mediaType: MT.manifest,
    artifactType: opts.artifactType,
    config: opts.config ? descriptorOf(opts.config.mediaType, opts.config.bytes) : EMPTY_DESCRIPTOR,
    layers: opts.layers && opts.layers.length ? opts.layers : [EMPTY_DESCRIPTOR],
    subject: { mediaType: opts.subject.mediaType, digest: opts.subject.digest, size: opts.subject.size },
    annotations: opts.annotations,
  };
}

/** The referrers tag schema (OCI distribution-spec 1.1) for registries without the referrers API. */
export function referrersTag(digest: string): string {
  return `sha256-${digestHex(digest)}`;
}

export function referrersIndex(manifests: Descriptor[]): ImageIndex {
  return { schemaVersion: 2, mediaType: MT.index, manifests };
}

/** Descriptor entry for an index, carrying the referrer's artifactType and annotations. */
export function referrerDescriptor(m: ImageManifest, bytes: Buffer): Descriptor {
  return {
    mediaType: MT.manifest,
    digest: sha256Digest(bytes),
    size: bytes.length,
    artifactType: m.artifactType ?? m.config.mediaType,
    ...(m.annotations ? { annotations: m.annotations } : {}),
  };
}

// A tag per the distribution-spec grammar; versions, channels and referrer tags all live in it.
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export function isValidTag(t: string): boolean {
  return TAG_RE.test(t);
}

/** Tags Kiln uses for its own bookkeeping, never release versions: the signed metadata (metadata.ts) and referrer indexes. */
export function isBookkeepingTag(t: string): boolean {
  return t === 'kiln.metadata' || /^sha256-[a-f0-9]{64}$/.test(t);
}
