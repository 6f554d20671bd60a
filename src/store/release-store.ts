/**
 * The release store: immutable releases (OCI artifacts tagged by version in the repository named
 * after the image), found by version or channel, with signatures, revocations and cloud image ids
 * attached as referrers. Works the same over an image layout and a registry (StoreBackend).
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { basename, join } from 'node:path';
import { KilnError } from '../errors.js';
import { TagExistsError, type PublishChanges, type StagedBlob, type StoreBackend } from './backend.js';
import { DigestMismatchError, type Progress } from './blobio.js';
import { LayoutStore } from './layout.js';
import { compareVersions } from '../apply/version-order.js';
import { ancestorsOf, parentRef, walkAncestry, type Ancestry, type AncestorLookup, type AncestorNode, type RecordedParent, type RevokedAncestor } from './ancestry.js';
import {
  ANN, canonicalJson, descriptorOf, EMPTY_BLOB, EMPTY_DESCRIPTOR, formatMediaType, isBookkeepingTag, isDigest, isoFromEpoch,
  jsonBlob, manifestBytes, MT, parseIndex, parseJson, parseManifest, referrerDescriptor, referrerManifest, referrersIndex, referrersTag, sha256Digest,
  type Descriptor, type ImageManifest,
} from './oci.js';
import { channelProblems, checkMetadata, DEFAULT_METADATA_TTL_DAYS, emptyMetadata, METADATA_TAG, type ChannelMove, type CloudIds, type Metadata } from './metadata.js';
import { artifactLayer, checkName, checkVersion, releaseManifest, validateRecord, type ArtifactInput, type ReleaseArtifact, type ReleaseParent, type ReleaseRecord } from './record.js';
import { readSeen, recordSeen } from './seen.js';
import { checkSignature, signaturePayload, type SignatureBlob, type SignatureCheck, type Signer, type TrustedKey } from './signing.js';

/** The verifier's policy: from kiln.yaml, the user's trust.yaml, flags or the Terraform query (policy.ts), never from the store. */
export interface TrustPolicy {
  requireSignature: boolean;
  keys: TrustedKey[];
}

export interface ReleaseStoreOptions {
  /** The key that signs metadata changes (revoke, channel set, cloud ids, refresh), loaded when first needed. */
  signer?: () => Promise<Signer | undefined>;
  /** Days a metadata document written here stays valid (0: never expires). */
  metadataTtlDays?: number;
}

/** The image's metadata as this reader accepts it: problems refuse every use of the image's releases. */
export interface MetadataView {
  meta: Metadata | null;
  digest: string | null;
  signature?: SignatureCheck;
  problems: string[];
}

export interface PublishInput {
  record: ReleaseRecord;
  artifacts: ArtifactInput[];
  sbom: object;
  provenance: object;
  signer?: Signer;
  onProgress?: (file: string, done: number, total: number) => void;
  /**
   * An interrupted build: checked before each blob, inside long copies and right before the tag.
   * Once it is aborted nothing more is written and what was is undone: no tag, the store as before.
   */
  signal?: AbortSignal;
}

/**
 * What a publish did: released (identical false), or found name@version released already with the
 * same artifacts (identical true; digest is the release that is there, ours the manifest this
 * publish would have written when it differs, as the build facts in the record do).
 */
export interface PublishResult { ref: string; digest: string; identical: boolean; ours?: string }

/** name@version is released with other artifacts than this build's: both manifests and what differs are named. */
export class ReleaseConflictError extends KilnError {
  constructor(readonly ref: string, location: string, readonly existing: string, readonly attempted: string, readonly differences: string[]) {
    super(`${ref} is already released in ${location} as ${existing} with other content than this build's ${attempted}`, {
      detail: differences.join('\n'),
      hint: 'a version is never rebuilt in place; the release there stays. Tag a new version for a change, or find why the two builds differ (`kiln rebuild`)',
    });
    this.name = 'ReleaseConflictError';
  }
}

/** The artifacts of two releases, compared by format: file, size and sha256; [] when they are the same. */
export function artifactDifferences(there: ReleaseArtifact[], ours: ReleaseArtifact[]): string[] {
  const out: string[] = [];
  const byFormat = (l: ReleaseArtifact[]) => new Map(l.map((a) => [a.format, a]));
  const a = byFormat(there);
  const b = byFormat(ours);
  for (const f of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(f);
    const y = b.get(f);
    if (!x) out.push(`${f}: only in this build (${y?.file} sha256:${y?.sha256})`);
    else if (!y) out.push(`${f}: only in the release there (${x.file} sha256:${x.sha256})`);
    else if (x.sha256 !== y.sha256 || x.size !== y.size || x.file !== y.file) out.push(`${f}: released ${x.file} sha256:${x.sha256} (${x.size} bytes), this build ${y.file} sha256:${y.sha256} (${y.size} bytes)`);
  }
  return out;
}

/** How long a registry publish waits before reading its tag back (KILN_REGISTRY_TAG_SETTLE_MS, default 1500). */
function tagSettleMs(): number {
  const v = Number(process.env.KILN_REGISTRY_TAG_SETTLE_MS);
  return Number.isFinite(v) && v >= 0 && process.env.KILN_REGISTRY_TAG_SETTLE_MS !== '' && process.env.KILN_REGISTRY_TAG_SETTLE_MS !== undefined ? v : 1500;
}

/** Blobs and tags a publish has written so far, to undo when it stops before its tag. */
interface Written { signal?: AbortSignal; changes: PublishChanges }

export interface Revocation { reason: string; time: string; by?: string }

export type { ChannelMove } from './metadata.js';
export interface ChannelState { name: string; channel: string; version: string; digest: string; log: ChannelMove[] }

export interface ReleaseEntry {
  name: string;
  version: string;
  digest: string;
  manifest: ImageManifest;
  manifestSize: number;
  record: ReleaseRecord;
}

export interface ReleaseDetails extends ReleaseEntry {
  signatures: { blob: SignatureBlob; check: SignatureCheck; digest: string }[];
  revocation?: Revocation;
  cloudIds: CloudIds;
  /** Why the image's signed metadata, or this release's place in it, cannot be trusted. */
  problems: string[];
  /** Who signed the metadata that said what the channel, revocation and cloud ids are. */
  metadataSigner?: string;
}

export interface ResolvedArtifact extends ReleaseArtifact { mediaType: string; digest: string; location: string }

export interface Resolved {
  name: string;
  version: string;
  digest: string;
  /** The channel the reference went through, if any. */
  channel?: string;
  /** Where the release is: <store>:<name>:<version> (layout) or host/repo@digest (registry). */
  reference: string;
  artifact?: ResolvedArtifact;
  artifacts: ResolvedArtifact[];
  cloudIds: CloudIds;
  signers: string[];
  revoked?: Revocation;
  /** The nearest ancestor (parent, its parent, …) that is revoked: set only when --force let it through. */
  revokedAncestor?: RevokedAncestor;
  /** Why the ancestry could not be checked in full: set only when --force let it through. */
  ancestryProblem?: string;
  sourceDateEpoch: number;
  commit: string;
  /** The source was verified against the archive signature (false: kiln.yaml said verify: false). */
  sourceVerified: boolean;
  /** Who signed the metadata the channel, revocation state and cloud ids came from. */
  metadataSigner?: string;
}

export interface VerifyReport {
  name: string;
  version: string;
  digest: string;
  checked: { what: string; digest: string; ok: boolean; problem?: string }[];
  signatures: SignatureCheck[];
  revoked?: Revocation;
  /** The source was verified against the archive signature. */
  sourceVerified: boolean;
  ok: boolean;
}

export interface ReleaseListing {
  name: string;
  version: string;
  digest: string;
  date: string;
  commit: string;
  formats: string[];
  signer: string;
  /**
   * The release's own state first (revoked, signature, metadata); then what it inherits: an ancestor
   * revoked, or a parent superseded (out-of-date). 'ok' means trusted, not revoked and up to date.
   */
  status: 'ok' | 'revoked' | 'unsigned' | 'bad-signature' | 'untrusted' | 'bad-metadata' | 'ancestor-revoked' | 'out-of-date';
  reason?: string;
  /** The release this one was built on, `name@version`. */
  parent?: string;
  /** The source was verified against the archive signature. */
  sourceVerified: boolean;
  /** Where it is published, from the signed metadata: cloud → region → image id. */
  cloudIds: CloudIds;
}

/** `name@version`, `name@channel` or `name@sha256:…`. */
export function parseReleaseRef(ref: string): { name: string; selector: string } {
  const at = ref.indexOf('@');
  if (at <= 0 || at === ref.length - 1) throw new KilnError(`'${ref}' is not a release reference`, { hint: 'write name@version (web@release-0.1.0) or name@channel (web@production)', exitCode: 2 });
  const name = ref.slice(0, at);
  checkName(name);
  return { name, selector: ref.slice(at + 1) };
}

export class ReleaseStore {
  private readonly metadataCache = new Map<string, MetadataView>();

  constructor(readonly backend: StoreBackend, readonly trust: TrustPolicy = { requireSignature: false, keys: [] }, readonly options: ReleaseStoreOptions = {}) {}

  get location(): string {
    return this.backend.location;
  }

  async exists(name: string, version: string): Promise<boolean> {
    return (await this.backend.getManifest(name, version)) !== null;
  }

  // ---- publish ----

  /**
   * Copies an artifact into the store's scratch now (hashed on the way), for a publish of it later in
   * this process to move into place: the formats step stages each artifact while it writes the next.
   * undefined where the store has no use for it (a registry uploads at publish).
   */
  async stage(file: string, signal?: AbortSignal): Promise<StagedBlob | undefined> {
    return this.backend.stageFile?.(file, { signal });
  }

  /** Drops a staged copy that was not published. */
  async discardStaged(path: string): Promise<void> {
    await this.backend.discardStaged?.(path);
  }

  /**
   * Publishes a release: blobs, manifest and signature first, the tag last. When name@version is
   * released already (found before the upload, or by a runner that tagged it first, found at the
   * tag) the two are compared: the same artifacts (format, file, size, sha256) make this publish a
   * success that writes nothing (`identical`); different ones fail with a ReleaseConflictError naming
   * both manifests and the artifacts that differ. Nothing is ever overwritten.
   */
  async publish(input: PublishInput): Promise<PublishResult> {
    const record: ReleaseRecord = { ...input.record, artifacts: input.artifacts.map((a) => ({ format: a.format, file: basename(a.file), size: a.size, sha256: a.sha256 })) };
    validateRecord(record);
    const { name, version } = record;
    const b = this.backend;
    // The manifest is known before anything is written: its layers are the artifacts' digests.
    const layers: Descriptor[] = input.artifacts.map((a) => artifactLayer({ ...a, file: basename(a.file), mediaType: a.mediaType ?? formatMediaType(a.format) }));
    const sbomBytes = jsonBlob(input.sbom);
    const provBytes = jsonBlob(input.provenance);
    const configBytes = jsonBlob(record);
    const manifest = releaseManifest(record, descriptorOf(MT.release, configBytes), layers, descriptorOf(MT.sbom, sbomBytes), descriptorOf(MT.provenance, provBytes));
    const mBytes = manifestBytes(manifest);
    const digest = sha256Digest(mBytes);
    const there = await this.release(name, version);
    if (there) return this.sameRelease(there, record, digest);
    const w: Written = { signal: input.signal, changes: { blobs: [], tags: [] } };
    try {
      for (const a of input.artifacts) {
        const st = await stat(a.file).catch(() => null);
        if (!st) throw new KilnError(`artifact ${a.file} does not exist`);
        if (st.size !== a.size) throw new KilnError(`artifact ${a.file} is ${st.size} bytes, the build recorded ${a.size}`, { hint: 'the file changed after the build; rebuild' });
        const onProgress = input.onProgress ? (d: number, t: number) => input.onProgress?.(a.file, d, t) : undefined;
        const src = { file: a.file, digest: `sha256:${a.sha256}`, size: a.size, ...(a.staged ? { staged: a.staged } : {}) };
        await this.tracked(name, src.digest, w, () => b.putBlob(name, src, { onProgress, signal: w.signal }));
      }
      for (const bytes of [sbomBytes, provBytes, configBytes]) await this.putBytes(name, bytes, w);
      // Manifest and signature first, tag last: a release is visible only once it is complete.
      await this.tracked(name, digest, w, () => b.putManifest(name, mBytes, MT.manifest));
      const subject: Descriptor = { mediaType: MT.manifest, digest, size: mBytes.length };
      if (input.signer) await this.attachSignature(name, version, subject, input.signer, w);
      w.signal?.throwIfAborted();
      await b.createTag(name, version, mBytes, MT.manifest, { signal: w.signal });
    } catch (e) {
      // Interrupted or failed before the tag: the store goes back to what it was. A rollback that
      // fails leaves only untagged blobs, which no release names.
      await b.rollback?.(w.changes).catch(() => undefined);
      // Another runner tagged this version while this one uploaded: compared as above. A registry
      // with immutable tags refuses the second PUT with an error of its own (Harbor, ECR and Artifact
      // Registry differ), so after any failed registry write the tag is read: if it is there, it decides.
      if (e instanceof TagExistsError || (b.remote && e instanceof KilnError)) {
        const other = await this.release(name, version).catch(() => null);
        if (other?.digest === digest) return { ref: `${name}@${version}`, digest, identical: false };
        if (other) return this.sameRelease(other, record, digest);
      }
      throw e;
    }
    // A registry has no compare-and-swap: a runner that checked the tag before this one put it may
    // put its own right after (last writer wins). Read the tag back once such a put has had time to
    // land: a different release there is this publish's conflict (or identical content). A second
    // put later than that would need a runner stalled between its check and its put for longer.
    if (b.remote) {
      await new Promise((r) => setTimeout(r, tagSettleMs()));
      const now = await this.release(name, version);
      if (now && now.digest !== digest) return this.sameRelease(now, record, digest);
    }
    // The release is complete and immutable now. A signed release is listed in the signed metadata
    // (a cross-check for readers); if that write fails, `kiln refresh` adds it later.
    if (input.signer) {
      try {
        await this.writeMetadata(name, input.signer, (m) => { m.releases[version] = digest; });
      } catch (e) {
        throw new KilnError(`${name}@${version} is released (${digest}), but its signed metadata was not updated: ${(e as Error).message}`, { hint: `kiln refresh ${name} with the signing key lists it` });
      }
    }
    return { ref: `${name}@${version}`, digest, identical: false };
  }

  /** This publish's answer when name@version exists: identical content is a success, anything else a conflict. */
  private sameRelease(there: ReleaseEntry, ours: ReleaseRecord, ourDigest: string): PublishResult {
    const diff = artifactDifferences(there.record.artifacts ?? [], ours.artifacts ?? []);
    if (!diff.length) return { ref: `${there.name}@${there.version}`, digest: there.digest, identical: true, ...(there.digest !== ourDigest ? { ours: ourDigest } : {}) };
    throw new ReleaseConflictError(`${there.name}@${there.version}`, this.location, there.digest, ourDigest, diff);
  }

  /** Writes one blob or manifest after checking for an interrupt, remembering it when it is new (the rollback removes it). */
  private async tracked(repo: string, digest: string, w: Written | undefined, write: () => Promise<unknown>): Promise<void> {
    if (!w) { await write(); return; }
    w.signal?.throwIfAborted();
    // Only a backend that can roll back needs to know (a registry would answer one more request per blob).
    const had = this.backend.rollback ? await this.backend.hasBlob(repo, digest) : true;
    await write();
    if (!had) w.changes.blobs.push(digest);
  }

  private async putBytes(repo: string, bytes: Buffer, w?: Written): Promise<Descriptor> {
    const d = descriptorOf('application/octet-stream', bytes);
    await this.tracked(repo, d.digest, w, () => this.backend.putBlob(repo, { digest: d.digest, size: d.size, bytes }, { signal: w?.signal }));
    return d;
  }

  // ---- referrers: signatures, revocations, cloud ids ----

  private async attachReferrer(repo: string, subject: Descriptor, artifactType: string, config: unknown, extraLayers: { mediaType: string; bytes: Buffer; title?: string }[] = [], annotations: Record<string, string> = {}, w?: Written): Promise<string> {
    const configBytes = jsonBlob(config);
    await this.putBytes(repo, configBytes, w);
    const layers: Descriptor[] = [];
    for (const l of extraLayers) {
      await this.putBytes(repo, l.bytes, w);
      layers.push(descriptorOf(l.mediaType, l.bytes, l.title ? { annotations: { [ANN.title]: l.title } } : {}));
    }
    if (!layers.length) await this.putBytes(repo, EMPTY_BLOB, w);
    const m = referrerManifest({ artifactType, subject, config: { mediaType: artifactType, bytes: configBytes }, layers, annotations: { [ANN.created]: new Date().toISOString(), ...annotations } });
    const bytes = manifestBytes(m);
    const digest = sha256Digest(bytes);
    await this.tracked(repo, digest, w, () => this.backend.putManifest(repo, bytes, MT.manifest));
    const desc = referrerDescriptor(m, bytes);
    if (w) {
      w.signal?.throwIfAborted();
      const before = await this.backend.getManifest(repo, referrersTag(subject.digest));
      w.changes.tags.push({ repo, tag: referrersTag(subject.digest), previous: before ? { mediaType: before.mediaType, digest: before.digest, size: before.bytes.length } : null });
    }
    await this.backend.updateTag(repo, referrersTag(subject.digest), async (cur) => {
      const list = cur ? parseIndex(cur.bytes, `referrers index of ${subject.digest}`).manifests : [];
      if (list.some((d) => d.digest === digest)) return null;
      const next = manifestBytes(referrersIndex([...list, desc]));
      if (w && this.backend.rollback && !(await this.backend.hasBlob(repo, sha256Digest(next)))) w.changes.blobs.push(sha256Digest(next));
      return { bytes: next, mediaType: MT.index };
    });
    return digest;
  }

  private async attachSignature(name: string, version: string, subject: Descriptor, signer: Signer, w?: Written): Promise<void> {
    const sig = await signer.sign(signaturePayload(name, version, subject.digest));
    const layers = [{ mediaType: sig.mediaType, bytes: sig.signature, title: sig.kind === 'ssh' ? 'release.sig' : 'release.asc' }];
    if (sig.publicKey) layers.push({ mediaType: 'application/pgp-keys', bytes: Buffer.from(sig.publicKey), title: 'signer.asc' });
    await this.attachReferrer(name, subject, MT.signature, { kind: sig.kind, signer: sig.signer, payload: signaturePayload(name, version, subject.digest).toString() }, layers, { [ANN.signer]: sig.signer }, w);
  }

  /** Referrer manifests of a release (verified), from the referrers API and the referrers tag. */
  async referrers(repo: string, digest: string): Promise<{ digest: string; manifest: ImageManifest }[]> {
    const descs = new Map<string, Descriptor>();
    for (const d of (await this.backend.nativeReferrers(repo, digest)) ?? []) descs.set(d.digest, d);
    const idx = await this.backend.getManifest(repo, referrersTag(digest));
    if (idx) for (const d of parseIndex(idx.bytes, `referrers index of ${digest}`).manifests) descs.set(d.digest, d);
    const out: { digest: string; manifest: ImageManifest }[] = [];
    for (const d of descs.values()) {
      const m = await this.backend.getManifest(repo, d.digest);
      if (!m) continue;
      const manifest = parseManifest(m.bytes, `referrer ${d.digest}`);
      if (manifest.subject?.digest !== digest) continue; // an index entry must not attach foreign artifacts
      out.push({ digest: d.digest, manifest });
    }
    return out.sort((a, b) => (a.manifest.annotations?.[ANN.created] ?? '').localeCompare(b.manifest.annotations?.[ANN.created] ?? ''));
  }

  async revoke(ref: string, reason: string): Promise<Revocation> {
    if (!reason.trim()) throw new KilnError('a revocation needs a reason', { hint: 'kiln revoke name@version --reason "why"', exitCode: 2 });
    const e = await this.entry(ref);
    const details = await this.details(e);
    if (details.revocation) throw new KilnError(`${e.name}@${e.version} is already revoked: ${details.revocation.reason}`);
    const rev: Revocation = { reason, time: new Date().toISOString(), by: safeUser() };
    await this.writeMetadata(e.name, await this.options.signer?.(), (m) => {
      m.releases[e.version] ??= e.digest;
      m.revoked[e.version] = { digest: e.digest, ...rev };
    });
    return rev;
  }

  /**
   * Record cloud image ids (e.g. {aws: {'eu-west-1': 'ami-…'}}) on a release, in its signed metadata.
   * Ids already recorded are not written again (no new seq, no signing key needed): false then.
   */
  async addCloudIds(ref: string, ids: CloudIds): Promise<boolean> {
    const e = await this.entry(ref);
    const known = (await this.metadata(e.name)).meta?.cloud[e.version];
    if (known?.digest === e.digest && Object.entries(ids).every(([cloud, regions]) => Object.entries(regions).every(([region, id]) => known.ids[cloud]?.[region] === id))) return false;
    await this.writeMetadata(e.name, await this.options.signer?.(), (m) => {
      m.releases[e.version] ??= e.digest;
      const cur = m.cloud[e.version]?.digest === e.digest ? m.cloud[e.version].ids : {};
      const merged: CloudIds = { ...cur };
      for (const [cloud, regions] of Object.entries(ids)) merged[cloud] = { ...merged[cloud], ...regions };
      m.cloud[e.version] = { digest: e.digest, ids: merged };
    });
    return true;
  }

  /** Forget image ids of a release (region → id, removed only where the recorded id is that one: they were deleted), in its signed metadata. */
  async removeCloudIds(name: string, version: string, cloud: string, ids: Record<string, string>): Promise<void> {
    const known = (await this.metadata(name)).meta?.cloud[version];
    if (!known || !Object.entries(ids).some(([r, id]) => known.ids[cloud]?.[r] === id)) return;
    await this.writeMetadata(name, await this.options.signer?.(), (m) => {
      const c = m.cloud[version]?.ids[cloud];
      if (!c) return;
      for (const [r, id] of Object.entries(ids)) if (c[r] === id) delete c[r];
      if (!Object.keys(c).length) delete m.cloud[version].ids[cloud];
      if (!Object.keys(m.cloud[version].ids).length) delete m.cloud[version];
    });
  }

  /** Sign the image's metadata again with a new expiry (TUF's timestamp role), or create it for an image that has none. */
  async refresh(name: string): Promise<Metadata> {
    checkName(name);
    const signer = await this.options.signer?.();
    if (!signer) throw new KilnError(`refreshing the metadata of ${name} needs the signing key`, { hint: 'set KILN_SIGNING_KEY, --sign-key or release.sign in kiln.yaml' });
    return this.writeMetadata(name, signer, async (m) => {
      // Releases published before metadata existed (or whose metadata write failed) are added.
      for (const tag of (await this.backend.listTags(name)).filter((t) => !isBookkeepingTag(t))) {
        const r = await this.release(name, tag);
        if (r) m.releases[r.version] ??= r.digest;
      }
    });
  }

  // ---- signed metadata ----

  /** The image's metadata document as stored, with its signature checked against the trust policy's keys. */
  private async readMetadataAt(name: string, stored: { digest: string; bytes: Buffer }): Promise<{ meta: Metadata; digest: string; signature?: SignatureCheck }> {
    const where = `metadata of ${name} (${stored.digest})`;
    const m = parseManifest(stored.bytes, where);
    if (m.artifactType !== MT.metadata || m.config.mediaType !== MT.metadata) throw new KilnError(`${where} is not a Kiln metadata manifest`, { hint: 'the store was tampered with' });
    const configBytes = await this.backend.readBlob(name, m.config);
    const meta = checkMetadata(parseJson(configBytes, where), name, where);
    const blob = await this.signatureIn(name, m, m.annotations?.[ANN.signer] ?? '');
    if (!blob) return { meta, digest: stored.digest };
    return { meta, digest: stored.digest, signature: await checkSignature(blob, configBytes, this.trust.keys) };
  }

  /** The signature a manifest carries as layers (and an OpenPGP signer's public key), or undefined when it has none. */
  private async signatureIn(repo: string, m: ImageManifest, signer: string, kind?: 'ssh' | 'pgp'): Promise<SignatureBlob | undefined> {
    const sigLayer = m.layers.find((l) => l.mediaType === MT.sshSignature || l.mediaType === MT.pgpSignature);
    if (!sigLayer) return undefined;
    const keyLayer = m.layers.find((l) => l.mediaType === 'application/pgp-keys');
    return {
      kind: kind ?? (sigLayer.mediaType === MT.sshSignature ? 'ssh' : 'pgp'), mediaType: sigLayer.mediaType, signer,
      signature: await this.backend.readBlob(repo, sigLayer),
      publicKey: keyLayer ? (await this.backend.readBlob(repo, keyLayer)).toString('utf8') : undefined,
    };
  }

  /** Who signed a release, for messages: each valid signature's signer, marked when its key is not trusted. */
  signerNames(d: ReleaseDetails): string[] {
    return d.signatures.filter((s) => s.check.valid).map((s) => s.check.signer + (s.check.trusted ? '' : ' (untrusted)'));
  }

  /**
   * The image's metadata as this reader accepts it. Problems: a signature that does not verify, a
   * document not signed by a trusted key when the policy requires signatures, an expired one, one
   * older than (or forked from) what this reader saw before, a channel moved back without
   * --allow-rollback, or no document at all when signatures are required or one was seen before.
   */
  async metadata(name: string): Promise<MetadataView> {
    const cached = this.metadataCache.get(name);
    if (cached) return cached;
    const view: MetadataView = { meta: null, digest: null, problems: [] };
    const seen = readSeen(this.location, name);
    const stored = await this.backend.getManifest(name, METADATA_TAG);
    if (!stored) {
      if (seen) view.problems.push(`the signed metadata of ${name} is gone from the store (seq ${seen.seq} was seen here on ${seen.time}): tampered or rolled back`);
      else if (this.trust.requireSignature) view.problems.push(`${name} has no signed metadata, so its channels, revocations and cloud ids cannot be checked (kiln refresh ${name} with the signing key creates it)`);
    } else {
      let read: Awaited<ReturnType<ReleaseStore['readMetadataAt']>>;
      try {
        read = await this.readMetadataAt(name, stored);
      } catch (e) {
        view.problems.push((e as Error).message);
        this.metadataCache.set(name, view);
        return view;
      }
      Object.assign(view, read);
      const { meta, signature } = read;
      if (signature && !signature.valid) view.problems.push(`the metadata signature by ${signature.signer} does not verify${signature.problem ? `: ${signature.problem}` : ''} (tampered?)`);
      else if (this.trust.requireSignature && !signature?.trusted) view.problems.push(signature ? `the metadata of ${name} is signed by ${signature.signer}, not a trusted key` : `the metadata of ${name} is unsigned, and the trust policy requires a signature`);
      if (signature?.valid && meta.expires && Date.now() > Date.parse(meta.expires)) view.problems.push(`the metadata of ${name} expired at ${meta.expires} (seq ${meta.seq}): it may be a stale copy; whoever holds the signing key runs kiln refresh ${name}`);
      if (seen && seen.seq > meta.seq) view.problems.push(`the metadata of ${name} is seq ${meta.seq}, older than seq ${seen.seq} seen here on ${seen.time}: a rollback to stale metadata`);
      else if (seen && seen.seq === meta.seq && seen.digest !== read.digest) view.problems.push(`the metadata of ${name} seq ${meta.seq} differs from the one seen here on ${seen.time}: two histories (forked)`);
      view.problems.push(...channelProblems(meta));
      if (!view.problems.length) recordSeen(this.location, name, meta.seq, read.digest);
    }
    this.metadataCache.set(name, view);
    return view;
  }

  /**
   * Change the image's metadata: fn edits a copy, which is written with seq + 1, a new expiry and
   * the signer's signature. Refused when the stored document is signed and no signer is given (an
   * unsigned document would replace a signed one), or when it does not verify, or is older than one
   * seen here.
   */
  private async writeMetadata(name: string, signer: Signer | undefined, fn: (m: Metadata) => void | Promise<void>): Promise<Metadata> {
    let next: Metadata | undefined;
    let nextDigest = '';
    await this.backend.updateTag(name, METADATA_TAG, async (cur) => {
      const prev = cur ? await this.readMetadataAt(name, cur) : null;
      if (prev?.signature && !prev.signature.valid) throw new KilnError(`the metadata of ${name} in ${this.location} does not verify: ${prev.signature.problem ?? 'bad signature'}`, { hint: 'the store was tampered with; restore it from a copy' });
      if (prev?.signature && !signer) throw new KilnError(`the metadata of ${name} is signed (by ${prev.signature.signer}); changing it needs the signing key`, { hint: 'set KILN_SIGNING_KEY, --sign-key or release.sign in kiln.yaml' });
      const seen = readSeen(this.location, name);
      if (seen && seen.seq > (prev?.meta.seq ?? 0)) throw new KilnError(`the metadata of ${name} in ${this.location} is seq ${prev?.meta.seq ?? 0}, older than seq ${seen.seq} seen here: refusing to build on a rolled-back copy`);
      const m: Metadata = structuredClone(prev?.meta ?? emptyMetadata(name));
      await fn(m);
      const now = new Date();
      const ttl = this.options.metadataTtlDays ?? DEFAULT_METADATA_TTL_DAYS;
      Object.assign(m, { seq: (prev?.meta.seq ?? 0) + 1, time: now.toISOString(), expires: signer && ttl > 0 ? new Date(now.getTime() + ttl * 86_400_000).toISOString() : null });
      const configBytes = Buffer.from(canonicalJson(m));
      const layers: Descriptor[] = [];
      const annotations: Record<string, string> = { [ANN.created]: m.time };
      await this.putBytes(name, configBytes);
      if (signer) {
        const sig = await signer.sign(configBytes);
        await this.putBytes(name, sig.signature);
        layers.push(descriptorOf(sig.mediaType, sig.signature, { annotations: { [ANN.title]: sig.kind === 'ssh' ? 'metadata.sig' : 'metadata.asc' } }));
        if (sig.publicKey) {
          const key = Buffer.from(sig.publicKey);
          await this.putBytes(name, key);
          layers.push(descriptorOf('application/pgp-keys', key, { annotations: { [ANN.title]: 'signer.asc' } }));
        }
        annotations[ANN.signer] = sig.signer;
      } else {
        await this.putBytes(name, EMPTY_BLOB);
        layers.push(EMPTY_DESCRIPTOR);
      }
      const manifest: ImageManifest = { schemaVersion: 2, mediaType: MT.manifest, artifactType: MT.metadata, config: descriptorOf(MT.metadata, configBytes), layers, annotations };
      const bytes = manifestBytes(manifest);
      nextDigest = sha256Digest(bytes);
      next = m;
      return { bytes, mediaType: MT.manifest };
    });
    if (!next) throw new Error('metadata update did not run');
    this.metadataCache.delete(name);
    recordSeen(this.location, name, next.seq, nextDigest);
    return next;
  }

  // ---- reading releases ----

  /** The release a tag or digest names; the manifest and record are verified against their digests. */
  async release(name: string, versionOrDigest: string): Promise<ReleaseEntry | null> {
    const m = await this.backend.getManifest(name, versionOrDigest);
    if (!m) return null;
    const manifest = parseManifest(m.bytes, `${name}@${versionOrDigest}`);
    if (manifest.artifactType !== MT.release && manifest.config.mediaType !== MT.release) return null;
    const record = parseJson(await this.backend.readBlob(name, manifest.config), `release record of ${name}@${versionOrDigest}`) as ReleaseRecord;
    if (record.name !== name) throw new KilnError(`${name}@${versionOrDigest} holds a release of '${record.name}'`, { hint: 'the store was tampered with' });
    if (!isDigest(versionOrDigest) && record.version !== versionOrDigest) throw new KilnError(`tag ${name}:${versionOrDigest} points at release ${record.version}`, { hint: 'the store was tampered with: tags must point at their own version' });
    return { name, version: record.version, digest: m.digest, manifest, manifestSize: m.bytes.length, record };
  }

  /** name@version | name@channel | name@sha256:… → the release, and the channel it went through. */
  async entry(ref: string): Promise<ReleaseEntry & { channel?: string }> {
    const { name, selector } = parseReleaseRef(ref);
    if (!isDigest(selector)) {
      const direct = await this.release(name, selector);
      if (direct) return direct;
      const ch = await this.channelGet(name, selector);
      if (ch) {
        const mv = await this.metadata(name);
        if (mv.problems.length) throw new KilnError(`refusing channel ${name}@${selector}: ${mv.problems.join('; ')}`, { hint: 'run kiln verify for details' });
        const e = await this.release(name, ch.version);
        if (!e) throw new KilnError(`channel ${name}@${selector} points at ${ch.version}, which is not in ${this.location}`);
        if (e.digest !== ch.digest) throw new DigestMismatchError(`release ${name}@${ch.version} (through channel ${selector})`, ch.digest, e.digest);
        return { ...e, channel: selector };
      }
    } else {
      const e = await this.release(name, selector);
      if (e) return e;
    }
    throw new KilnError(`no release ${name}@${selector} in ${this.location}`, { hint: `list them with: kiln releases ${name}` });
  }

  async details(e: ReleaseEntry): Promise<ReleaseDetails> {
    const d: ReleaseDetails = { ...e, signatures: [], cloudIds: {}, problems: [] };
    const mv = await this.metadata(e.name);
    d.problems.push(...mv.problems);
    if (mv.signature?.valid) d.metadataSigner = mv.signature.signer + (mv.signature.trusted ? '' : ' (untrusted)');
    if (mv.meta) {
      const listed = mv.meta.releases[e.version];
      if (listed && listed !== e.digest) d.problems.push(`the signed metadata says ${e.name}@${e.version} is ${listed}, the store holds ${e.digest}`);
      const rev = mv.meta.revoked[e.version];
      if (rev) {
        d.revocation = { reason: rev.reason, time: rev.time, by: rev.by };
        if (rev.digest !== e.digest) d.problems.push(`the signed metadata revokes ${e.name}@${e.version} as ${rev.digest}, the store holds ${e.digest}`);
      }
      const cloud = mv.meta.cloud[e.version];
      if (cloud?.digest === e.digest) d.cloudIds = structuredClone(cloud.ids);
    }
    for (const r of await this.referrers(e.name, e.digest)) {
      const type = r.manifest.artifactType ?? r.manifest.config.mediaType;
      if (type !== MT.signature) continue;
      const cfg = parseJson(await this.backend.readBlob(e.name, r.manifest.config), `signature ${r.digest}`) as { kind: 'ssh' | 'pgp'; signer: string };
      const blob = await this.signatureIn(e.name, r.manifest, cfg.signer, cfg.kind);
      if (!blob) { d.problems.push(`signature ${r.digest} has no signature layer`); continue; }
      const check = await checkSignature(blob, signaturePayload(e.name, e.version, e.digest), this.trust.keys);
      d.signatures.push({ blob, check, digest: r.digest });
    }
    return d;
  }

  /** Why every consumer must refuse this release under the trust policy, or null. */
  trustProblem(d: ReleaseDetails): string | null {
    const bad = d.signatures.find((s) => !s.check.valid);
    if (bad) return `signature by ${bad.check.signer} does not verify${bad.check.problem ? `: ${bad.check.problem}` : ''} (tampered?)`;
    if (this.trust.requireSignature && !d.signatures.some((s) => s.check.trusted)) {
      return d.signatures.length ? `not signed by a trusted key (signed by ${d.signatures.map((s) => s.check.signer).join(', ')})` : 'unsigned, and the trust policy requires a signature';
    }
    if (d.problems.length) return d.problems.join('; ');
    return null;
  }

  private artifacts(e: ReleaseEntry): ResolvedArtifact[] {
    return e.manifest.layers.filter((l) => l.annotations?.[ANN.format]).map((l) => {
      const file = l.annotations?.[ANN.title] ?? '';
      return {
        format: l.annotations?.[ANN.format] ?? '', file, size: l.size, sha256: l.digest.slice(7), mediaType: l.mediaType, digest: l.digest,
        location: this.backend.blobLocation(e.name, l.digest),
      };
    });
  }

  reference(e: { name: string; version: string; digest: string }): string {
    const b = this.backend as StoreBackend & { reference?: (r: string) => string };
    return b.remote && b.reference ? `${b.reference(e.name)}@${e.digest}` : `${b.location}:${e.name}:${e.version}`;
  }

  async resolve(ref: string, opts: { format?: string; force?: boolean; /** false: the caller uses no artifact (a cloud id), so none is hashed. */ verifyArtifacts?: boolean } = {}): Promise<Resolved> {
    const e = await this.entry(ref);
    const d = await this.details(e);
    const problem = this.trustProblem(d);
    if (problem) throw new KilnError(`refusing ${e.name}@${e.version}: ${problem}`, { hint: 'run kiln verify for details' });
    if (d.revocation && !opts.force) {
      throw new KilnError(`${e.name}@${e.version} is revoked: ${d.revocation.reason}`, { detail: `revoked at ${d.revocation.time}${d.revocation.by ? ` by ${d.revocation.by}` : ''}`, hint: 'use a newer release, or pass --force to use it anyway' });
    }
    // A revocation reaches every descendant: what was wrong with the base is inside the child's disk too.
    const anc = await ancestorsOf(e.record, this.ancestorLookup());
    if (anc.revoked && !opts.force) {
      const r = anc.revoked;
      throw new KilnError(`${e.name}@${e.version} is built on ${parentRef(r)}, which is revoked: ${r.reason}`, {
        detail: `ancestry: ${[parentRef(e), ...anc.chain.map(parentRef)].join(' <- ')}`,
        hint: `build ${e.name} again on a release of ${r.name} that is not revoked, or pass --force to use it anyway`,
      });
    }
    if (anc.problem && !opts.force) {
      throw new KilnError(`refusing ${e.name}@${e.version}: ${anc.problem}`, { hint: 'kiln releases --tree shows its ancestry; pass --force to use it anyway' });
    }
    const artifacts = this.artifacts(e);
    for (const a of artifacts) {
      if (!e.record.artifacts.some((r) => r.file === a.file && r.sha256 === a.sha256)) throw new KilnError(`${e.name}@${e.version}: layer ${a.file} does not match the release record`, { hint: 'the store was tampered with' });
    }
    let artifact: ResolvedArtifact | undefined;
    if (opts.format) {
      artifact = artifacts.find((a) => a.format === opts.format);
      if (!artifact) throw new KilnError(`${e.name}@${e.version} has no ${opts.format} artifact`, { hint: `formats: ${artifacts.map((a) => a.format).join(', ')}` });
    } else if (artifacts.length === 1) {
      artifact = artifacts[0];
    }
    // A local path is handed to tools that trust it: hash it now. A registry reference carries its digest.
    if (!this.backend.remote && opts.verifyArtifacts !== false) for (const a of artifact ? [artifact] : artifacts) await this.backend.verifyBlob(e.name, { mediaType: a.mediaType, digest: a.digest, size: a.size });
    return {
      name: e.name, version: e.version, digest: e.digest, channel: e.channel, reference: this.reference(e),
      artifact, artifacts, cloudIds: d.cloudIds, signers: this.signerNames(d),
      revoked: d.revocation, ...(anc.revoked ? { revokedAncestor: anc.revoked } : {}), ...(anc.problem ? { ancestryProblem: anc.problem } : {}),
      sourceDateEpoch: e.record.sourceDateEpoch, commit: e.record.git.commit, sourceVerified: sourceVerified(e.record),
      metadataSigner: d.metadataSigner,
    };
  }

  /** Check every digest (manifest, record, each layer streamed, referrers) and every signature. */
  async verify(ref: string, onProgress?: (what: string, done: number, total: number) => void): Promise<VerifyReport> {
    const e = await this.entry(ref);
    const checked: VerifyReport['checked'] = [{ what: 'manifest', digest: e.digest, ok: true }, { what: 'release record', digest: e.manifest.config.digest, ok: true }];
    for (const l of e.manifest.layers) {
      const what = l.annotations?.[ANN.title] ?? l.mediaType;
      try {
        await this.backend.verifyBlob(e.name, l, onProgress ? (dn: number, t: number) => onProgress(what, dn, t) : undefined);
        checked.push({ what, digest: l.digest, ok: true });
      } catch (err) {
        checked.push({ what, digest: l.digest, ok: false, problem: (err as Error).message });
      }
    }
    for (const a of this.artifacts(e)) {
      if (!e.record.artifacts.some((r) => r.file === a.file && r.sha256 === a.sha256)) checked.push({ what: `${a.file} vs release record`, digest: a.digest, ok: false, problem: 'layer digest differs from the release record' });
    }
    let d: ReleaseDetails;
    try {
      d = await this.details(e);
    } catch (err) {
      checked.push({ what: 'referrers', digest: e.digest, ok: false, problem: (err as Error).message });
      return { name: e.name, version: e.version, digest: e.digest, checked, signatures: [], sourceVerified: sourceVerified(e.record), ok: false };
    }
    const mv = await this.metadata(e.name);
    if (mv.digest) checked.push({ what: `metadata seq ${mv.meta?.seq ?? '?'}${d.metadataSigner ? `, signed by ${d.metadataSigner}` : mv.signature ? '' : ', unsigned'}`, digest: mv.digest, ok: !mv.problems.length, problem: mv.problems.join('; ') || undefined });
    const trustProblem = this.trustProblem({ ...d, problems: mv.digest ? [] : d.problems });
    if (trustProblem) checked.push({ what: 'trust policy', digest: e.digest, ok: false, problem: trustProblem });
    return {
      name: e.name, version: e.version, digest: e.digest, checked, signatures: d.signatures.map((s) => s.check), revoked: d.revocation,
      sourceVerified: sourceVerified(e.record), ok: checked.every((c) => c.ok),
    };
  }

  async list(name?: string): Promise<ReleaseListing[]> {
    const names = name ? [name] : await this.backend.listRepositories();
    const found: { e: ReleaseEntry; d: ReleaseDetails }[] = [];
    for (const n of names) {
      for (const tag of (await this.backend.listTags(n)).filter((t) => !isBookkeepingTag(t))) {
        const e = await this.release(n, tag);
        if (e) found.push({ e, d: await this.details(e) });
      }
    }
    // Every listed release is a possible ancestor of another: seed the walk with what is read already.
    const memo = newAncestryMemo();
    for (const { e, d } of found) {
      const node = Promise.resolve(ancestorNode(e, d));
      memo.nodes.set(nodeKey(e.name, e.digest), node);
      memo.nodes.set(nodeKey(e.name, e.version), node);
    }
    const lookup = this.ancestorLookup(memo);
    const out: ReleaseListing[] = [];
    for (const { e, d } of found) {
      const good = d.signatures.find((s) => s.check.valid && s.check.trusted) ?? d.signatures.find((s) => s.check.valid);
      let status: ReleaseListing['status'] = 'ok';
      if (d.signatures.some((s) => !s.check.valid)) status = 'bad-signature';
      else if (d.problems.length) status = 'bad-metadata';
      else if (d.revocation) status = 'revoked';
      else if (!d.signatures.length) status = this.trust.requireSignature ? 'unsigned' : 'ok';
      else if (this.trust.keys.length && !good?.check.trusted) status = 'untrusted';
      let reason = status === 'bad-metadata' ? d.problems[0] : d.revocation?.reason;
      const a = await ancestorsOf(e.record, lookup);
      // The release's own state wins: inherited states only tell an otherwise good release apart.
      const inherited = await this.inheritedState(a, memo);
      if (status === 'ok' && inherited.status) status = inherited.status;
      reason ??= inherited.reason;
      out.push({
        name: e.name, version: e.version, digest: e.digest, date: isoFromEpoch(e.record.sourceDateEpoch), commit: e.record.git.commit,
        formats: e.record.artifacts.map((x) => x.format), signer: good ? good.check.signer : '-', status,
        reason, sourceVerified: sourceVerified(e.record), cloudIds: d.cloudIds,
        ...(a.parent ? { parent: parentRef(a.chain[0] ?? a.parent) } : {}),
      });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name) || a.date.localeCompare(b.date) || a.version.localeCompare(b.version, undefined, { numeric: true }));
  }

  // ---- ancestry ----

  /** Reads the releases of a chain for walkAncestry, each once per memo. */
  ancestorLookup(memo: AncestryMemo = newAncestryMemo()): AncestorLookup {
    return (ref) => {
      const selector = ref.digest ?? ref.version;
      if (!selector) return Promise.resolve(null);
      const key = nodeKey(ref.name, selector);
      let node = memo.nodes.get(key);
      if (!node) {
        node = (async () => {
          const e = await this.release(ref.name, selector);
          return e ? ancestorNode(e, await this.details(e)) : null;
        })();
        memo.nodes.set(key, node);
      }
      return node;
    };
  }

  /**
   * What a release inherits from its ancestry: a revoked ancestor, else a parent superseded, with the
   * reason; a parent this store does not hold, or an ancestry that cannot be read, is a reason alone.
   */
  private async inheritedState(a: Ancestry & { parent?: RecordedParent }, memo: AncestryMemo): Promise<{ status?: 'ancestor-revoked' | 'out-of-date'; reason?: string }> {
    if (a.revoked) return { status: 'ancestor-revoked', reason: `${parentRef(a.revoked)} is revoked: ${a.revoked.reason}` };
    if (a.problem) return { reason: a.problem };
    if (!a.parent) return {};
    const parent = a.chain[0];
    if (!parent) return { reason: `its parent ${parentRef(a.parent)}${a.parent.digest ? ` (${a.parent.digest})` : ''} is not in this store` };
    if (a.parent.channel) {
      const c = (await this.metadata(parent.name)).meta?.channels[a.parent.channel];
      if (!c) return { reason: `built from channel ${parent.name}@${a.parent.channel}, which no longer exists` };
      if (c.digest !== parent.digest) return { status: 'out-of-date', reason: `${parent.name}@${a.parent.channel} now points at ${c.version}, not ${parent.version}` };
      return {};
    }
    const newer = await this.newestAfter(parent, memo);
    return newer ? { status: 'out-of-date', reason: `${parent.name}@${newer} is newer than ${parentRef(parent)}` } : {};
  }

  /**
   * The newest version of the parent's image that is newer than it and not revoked, by the numbers in
   * the tag (as channels and kiln apply order them), else by SOURCE_DATE_EPOCH.
   */
  private async newestAfter(parent: ReleaseParent, memo: AncestryMemo): Promise<string | undefined> {
    let tags = memo.tags.get(parent.name);
    if (!tags) {
      tags = this.backend.listTags(parent.name).then((t) => t.filter((x) => !isBookkeepingTag(x)));
      memo.tags.set(parent.name, tags);
    }
    const lookup = this.ancestorLookup(memo);
    const epoch = async (version: string) => (await lookup({ name: parent.name, version }))?.record.sourceDateEpoch;
    const isNewer = async (a: string, b: string) => {
      const order = compareVersions(a, b);
      if (order !== undefined) return order > 0;
      return ((await epoch(a)) ?? 0) > ((await epoch(b)) ?? 0);
    };
    let newest: string | undefined;
    for (const v of await tags) {
      if (!(await isNewer(v, newest ?? parent.version))) continue;
      const node = await lookup({ name: parent.name, version: v });
      if (node && !node.revocation) newest = v;
    }
    return newest;
  }

  // ---- channels ----

  /** A channel as the image's metadata says (checked by metadata(), which callers that act on it consult). */
  async channelGet(name: string, channel: string): Promise<ChannelState | null> {
    const c = (await this.metadata(name)).meta?.channels[channel];
    return c ? { name, channel, version: c.version, digest: c.digest, log: c.log } : null;
  }

  async channelList(name?: string): Promise<ChannelState[]> {
    const names = name ? [name] : await this.backend.listRepositories();
    const out: ChannelState[] = [];
    for (const n of names) {
      const meta = (await this.metadata(n)).meta;
      for (const ch of Object.keys(meta?.channels ?? {}).sort()) {
        const c = meta!.channels[ch];
        out.push({ name: n, channel: ch, version: c.version, digest: c.digest, log: c.log });
      }
    }
    return out;
  }

  /**
   * Point a channel at a release, in the image's signed metadata; the channel's log (every move,
   * with time and previous target) travels with it. Moving to an older version is refused unless
   * allowRollback, which is recorded in the signed move.
   */
  async channelSet(channel: string, ref: string, opts: { force?: boolean; allowRollback?: boolean } = {}): Promise<ChannelState> {
    checkVersion(channel);
    const e = await this.entry(ref);
    if (await this.release(e.name, channel)) throw new KilnError(`'${channel}' is a version of ${e.name}, it cannot also be a channel`);
    const d = await this.details(e);
    const problem = this.trustProblem(d);
    if (problem) throw new KilnError(`refusing to point ${channel} at ${e.name}@${e.version}: ${problem}`);
    if (d.revocation && !opts.force) throw new KilnError(`${e.name}@${e.version} is revoked: ${d.revocation.reason}`, { hint: 'pass --force to point a channel at it anyway' });
    const cur = (await this.metadata(e.name)).meta?.channels[channel];
    let back = false;
    if (cur && cur.digest !== e.digest) {
      const order = compareVersions(e.version, cur.version);
      if (order !== undefined) back = order < 0;
      else back = e.record.sourceDateEpoch < ((await this.release(e.name, cur.version))?.record.sourceDateEpoch ?? 0);
    }
    if (back && !opts.allowRollback) {
      throw new KilnError(`${e.name}@${channel} is at ${cur!.version}; ${e.version} is older`, { hint: 'a channel moves back only on purpose: pass --allow-rollback (the signed log records it)' });
    }
    const move: ChannelMove = { time: new Date().toISOString(), version: e.version, digest: e.digest, previous: cur ? { version: cur.version, digest: cur.digest } : null, by: safeUser(), ...(back ? { allowRollback: true } : {}) };
    const m = await this.writeMetadata(e.name, await this.options.signer?.(), (meta) => {
      meta.releases[e.version] ??= e.digest;
      const prev = meta.channels[channel];
      meta.channels[channel] = { version: e.version, digest: e.digest, log: [...(prev?.log ?? []), move] };
    });
    const c = m.channels[channel];
    return { name: e.name, channel, version: c.version, digest: c.digest, log: c.log };
  }

  // ---- copying between stores ----

  /** Copy a release and its referrers (signatures, revocations, cloud ids) into another store, verifying every blob. */
  async copyTo(dst: ReleaseStore, ref: string, onProgress?: Progress): Promise<{ name: string; version: string; digest: string; copied: boolean; metadata: MetadataCopy; signers: string[]; revoked?: Revocation }> {
    const e = await this.entry(ref);
    // The reader's policy applies to what it copies: nothing it would refuse to use is spread further.
    const d = await this.details(e);
    const problem = this.trustProblem(d);
    if (problem) throw new KilnError(`refusing to copy ${e.name}@${e.version}: ${problem}`, { hint: 'run kiln verify for details' });
    const signers = this.signerNames(d);
    let copied = true;
    if (await dst.exists(e.name, e.version)) {
      const there = await dst.release(e.name, e.version);
      if (there?.digest !== e.digest) throw new TagExistsError(e.name, e.version, dst.location);
      copied = false;
    }
    const referrers = await this.referrers(e.name, e.digest);
    const work = await mkdtemp(join(dst.backend instanceof LayoutStore ? dst.backend.tempDir() : tmpdir(), `${process.pid}-copy-`));
    let metadata: MetadataCopy;
    try {
      const copyManifest = async (m: ImageManifest) => {
        for (const desc of [m.config, ...m.layers]) await this.copyBlob(dst, e.name, desc, work, onProgress);
      };
      const mBytes = (await this.backend.getManifest(e.name, e.digest))?.bytes;
      if (!mBytes) throw new KilnError(`manifest ${e.digest} vanished during the copy`);
      if (copied) {
        await copyManifest(e.manifest);
        await dst.backend.putManifest(e.name, mBytes, MT.manifest);
      }
      // Signatures, and for a release that is already there, the ones added since.
      for (const r of referrers) {
        const rb = (await this.backend.getManifest(e.name, r.digest))?.bytes;
        if (!rb) continue;
        const desc = referrerDescriptor(r.manifest, rb);
        await copyManifest(r.manifest);
        await dst.backend.putManifest(e.name, rb, MT.manifest);
        await dst.backend.updateTag(e.name, referrersTag(e.digest), async (cur) => {
          const list = cur ? parseIndex(cur.bytes, 'referrers index').manifests : [];
          if (list.some((x) => x.digest === desc.digest)) return null;
          return { bytes: manifestBytes(referrersIndex([...list, desc])), mediaType: MT.index };
        });
      }
      if (copied) await dst.backend.createTag(e.name, e.version, mBytes, MT.manifest);
      // The image's metadata (revocations, channels, cloud ids) goes along, newest wins.
      metadata = await this.copyMetadata(dst, e.name, work, onProgress);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    return { name: e.name, version: e.version, digest: e.digest, copied, metadata, signers, revoked: d.revocation };
  }

  /**
   * Copies the image's metadata document byte for byte (its signature stays valid) when the
   * destination's is older or missing; keeps the destination's when it is newer; refuses two
   * different documents with the same seq (forked histories).
   */
  private async copyMetadata(dst: ReleaseStore, name: string, work: string, onProgress?: Progress): Promise<MetadataCopy> {
    const src = await this.backend.getManifest(name, METADATA_TAG);
    if (!src) return { action: 'none' };
    const mine = await this.readMetadataAt(name, src);
    if (mine.signature && !mine.signature.valid) throw new KilnError(`the metadata of ${name} in ${this.location} does not verify; not copying it`, { hint: 'the source store was tampered with' });
    const m = parseManifest(src.bytes, `metadata of ${name}`);
    for (const desc of [m.config, ...m.layers]) await this.copyBlob(dst, name, desc, work, onProgress);
    await dst.backend.putManifest(name, src.bytes, MT.manifest);
    let result: MetadataCopy = { action: 'copied', seq: mine.meta.seq };
    await dst.backend.updateTag(name, METADATA_TAG, async (cur) => {
      if (cur?.digest === src.digest) { result = { action: 'same', seq: mine.meta.seq }; return null; }
      if (cur) {
        const theirs = await dst.readMetadataAt(name, cur).catch(() => null);
        if (theirs && theirs.meta.seq > mine.meta.seq) { result = { action: 'kept-newer', seq: theirs.meta.seq }; return null; }
        if (theirs && theirs.meta.seq === mine.meta.seq) {
          throw new KilnError(`the metadata of ${name} is seq ${mine.meta.seq} in both stores, with different content (${src.digest} here, ${cur.digest} in ${dst.location}): two histories`, { hint: 'one side changed it without the other; decide which is right and `kiln refresh` it' });
        }
      }
      return { bytes: src.bytes, mediaType: MT.manifest };
    });
    dst.metadataCache.delete(name);
    return result;
  }

  private async copyBlob(dst: ReleaseStore, repo: string, desc: Descriptor, work: string, onProgress?: Progress): Promise<void> {
    if (dst.backend.remote && (await dst.backend.hasBlob(repo, desc.digest))) return;
    if (this.backend instanceof LayoutStore) {
      // Hashing happens in putBlob (local file → destination), so a tampered source blob is refused.
      await dst.backend.putBlob(repo, { file: this.backend.blobPath(desc.digest), digest: desc.digest, size: desc.size }, { onProgress });
      return;
    }
    const tmp = join(work, desc.digest.slice(7));
    await this.backend.downloadBlob(repo, desc, tmp, onProgress);
    await dst.backend.putBlob(repo, { file: tmp, digest: desc.digest, size: desc.size });
    await rm(tmp, { force: true });
  }
}

/** Releases read during one listing or walk, each once: key name + digest or version. */
export interface AncestryMemo {
  nodes: Map<string, Promise<AncestorNode | null>>;
  tags: Map<string, Promise<string[]>>;
}

function newAncestryMemo(): AncestryMemo {
  return { nodes: new Map(), tags: new Map() };
}

function nodeKey(name: string, selector: string): string {
  return `${name} ${selector}`;
}

function ancestorNode(e: ReleaseEntry, d: ReleaseDetails): AncestorNode {
  return {
    name: e.name, version: e.version, digest: e.digest, record: e.record,
    ...(d.revocation ? { revocation: { reason: d.revocation.reason } } : {}),
    ...(d.problems.length ? { problem: d.problems.join('; ') } : {}),
  };
}

/**
 * The chain from the release with this manifest digest up to its root (the release itself first),
 * and the nearest revoked release in it: what a child build checks of the parent it is built on.
 * `name` spares a search of every repository (a registry answers one request per repository).
 */
export async function checkAncestry(store: ReleaseStore, digest: string, name?: string): Promise<Ancestry> {
  if (!isDigest(digest)) throw new KilnError(`expected a release digest sha256:<64 hex digits>, got ${JSON.stringify(digest)}`);
  const start = name ?? (await repositoryOf(store, digest));
  if (start) checkName(start);
  if (!start || !(await store.release(start, digest))) {
    throw new KilnError(`no release ${name ? `${name}@` : ''}${digest} in ${store.location}`, { hint: 'pull the parent release into this store (kiln pull name@version --from …), or build on one that is there' });
  }
  return walkAncestry({ name: start, digest }, store.ancestorLookup());
}

/** The image whose release has this manifest digest, by reading the record each repository's copy names. */
async function repositoryOf(store: ReleaseStore, digest: string): Promise<string | undefined> {
  for (const repo of await store.backend.listRepositories()) {
    const m = await store.backend.getManifest(repo, digest);
    if (!m) continue;
    const manifest = parseManifest(m.bytes, `${repo}@${digest}`);
    if (manifest.artifactType !== MT.release && manifest.config.mediaType !== MT.release) continue;
    // A layout shares one blob pool among its images: the record says which image the release is of.
    const recordName = (parseJson(await store.backend.readBlob(repo, manifest.config), `release record of ${repo}@${digest}`) as { name?: unknown }).name;
    if (typeof recordName === 'string' && (recordName === repo || !store.backend.remote)) return recordName;
  }
  return undefined;
}

export type MetadataCopy = { action: 'none' } | { action: 'copied' | 'same' | 'kept-newer'; seq: number };

function sourceVerified(record: ReleaseRecord): boolean {
  return (record.source as { verified?: boolean }).verified !== false;
}

function safeUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}
