/**
 * The release record: what a release is, stored as the config blob of its OCI manifest.
 * Everything in it is fixed at release time; cloud image ids come later as referrers.
 */
import { posix } from 'node:path';
import { KilnError } from '../errors.js';
import { ANN, isBookkeepingTag, isDigest, isoFromEpoch, isValidTag, MT, type Descriptor, type ImageManifest } from './oci.js';

export interface SourcePackage {
  name: string;
  version: string;
  arch: string;
  /** sha256 of the .deb, when the source step knows it. */
  sha256?: string;
}

/**
 * The source as a release stores it: what the build's source step recorded (src/source/debian.ts's
 * SourceRecord today, other upstreams later), opaque to the store except `packages`.
 */
export interface StoredSource {
  packages?: SourcePackage[];
  [key: string]: unknown;
}

/** An upstream input with its digest (a SLSA resolvedDependency). */
export interface Material {
  uri: string;
  digest: Record<string, string>;
  name?: string;
}

export interface ReleaseArtifact {
  format: string;
  /** File name inside the release (the layer's org.opencontainers.image.title). */
  file: string;
  size: number;
  sha256: string;
}

/**
 * The Kiln release a child image was built on (kiln.yaml's source.release). Records written before
 * ancestry existed have `parents: []`, or entries without a digest: readers go by the tag then.
 */
export interface ReleaseParent {
  name: string;
  version: string;
  /** The parent release's manifest digest (sha256:…): what ancestry walks by. */
  digest: string;
  /** Set when the child was built from name@channel (base@stable) rather than an exact version. */
  channel?: string;
}

/** The upstream at the root of a chain of releases, copied from the parent's record by a child build. */
export interface ReleaseRoot {
  kind: 'debian-archive' | 'vendor-image';
  uri: string;
  digest: Record<string, string>;
}

export interface BuildFacts {
  /** The git tree object of the commit (what the dirty check compared the work tree with). */
  gitTree?: string;
  /** ansible-core and the collections package (Debian's `ansible`) the playbook ran with, and where they came from. */
  ansible?: { core?: string; collections?: string; controller: 'tools-tree' | 'host'; toolsSuite?: string; toolsInRelease?: string };
  /** Debian package versions of the host tools that wrote the image (mmdebstrap, qemu-utils, e2fsprogs…). */
  hostTools: Record<string, string>;
  /** The steps before the release, with their wall times in seconds (what `kiln report` charts). */
  steps?: { name: string; seconds: number }[];
  /**
   * Outputs taken from the step cache shared through a registry (kiln build --cache): a release says
   * which of its steps it did not run itself, and, when the build required signed entries
   * (--cache-trust-key), which keys signed them.
   */
  remoteCache?: { location: string; steps: string[]; /** With --cache-trust-key: who signed the entries used (each was checked). */ signedBy?: string[] };
}

export interface ReleaseRecord {
  name: string;
  version: string;
  git: { commit: string; tag?: string; repository?: string };
  /** SOURCE_DATE_EPOCH (seconds): the commit time; the release's date everywhere. */
  sourceDateEpoch: number;
  /** Path of kiln.yaml relative to the repository root. */
  template?: string;
  source: StoredSource;
  /** Upstream inputs with digests (archive Release file, verified images, parent releases). */
  materials?: Material[];
  /** The release this one was built on: none for an image built from an upstream, exactly one for a child. */
  parents: ReleaseParent[];
  /** The upstream at the root of the chain (a child copies its parent's). */
  root?: ReleaseRoot;
  buildDurationSeconds?: number;
  kilnVersion: string;
  /** What the build ran with (provenance's internalParameters): the repository tree, the Ansible, the host's tools. */
  build?: BuildFacts;
  artifacts: ReleaseArtifact[];
}

/**
 * A release artifact as the build hands it over (src/formats' Artifact is one): `file` is the path
 * of the file to store, whose base name becomes the file name in the release.
 */
export interface ArtifactInput extends ReleaseArtifact {
  /** Layer media type; default from the format (src/formats/registry.ts). */
  mediaType?: string;
  /** The store's staged copy of the file (ReleaseStore.stage), moved into place instead of copied. */
  staged?: string;
}

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function checkName(name: string): void {
  if (!NAME_RE.test(name)) throw new KilnError(`invalid image name '${name}'`, { hint: 'names are lower-case letters, digits, ".", "_" and "-" (as in kiln.yaml)' });
}

export function checkVersion(version: string): void {
  if (!isValidTag(version) || isBookkeepingTag(version) || /^sha256-/.test(version)) {
    throw new KilnError(`invalid version '${version}'`, { hint: 'a version is an OCI tag: letters, digits, ".", "_", "-", at most 128 characters, not "kiln.metadata" nor starting with "sha256-"' });
  }
}

/** A full git object id: SHA-1 (40 hex digits) or SHA-256 (64), as `git rev-parse` prints it. */
const COMMIT_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/*
 * A record is read back from a store that may be shared or copied: before kiln apply or kiln
 * rebuild hands its commit to git and its template path to the file system, each must be what a
 * build writes. An abbreviated id, a ref name or an option ("--orphan") is not a commit; a path
 * that is absolute or climbs out with ".." is not a file of the repository.
 */
export function checkCommit(commit: unknown, release: string): void {
  if (typeof commit !== 'string' || !COMMIT_RE.test(commit)) {
    throw new KilnError(`release ${release} records commit ${JSON.stringify(commit)}, which is not a full git commit id (40 or 64 lower-case hex digits)`, {
      hint: 'a build records the commit it built; this record was not written by kiln build, or was altered: do not use it',
    });
  }
}

/** Returns the recorded kiln.yaml path when it is relative, normal and stays inside the repository. */
export function checkTemplatePath(template: unknown, release: string): string {
  const ok = typeof template === 'string' && template !== '' && !template.includes('\0') && !template.startsWith('/')
    && posix.normalize(template) === template && !template.split('/').includes('..') && template !== '.';
  if (!ok) {
    throw new KilnError(`release ${release} records its kiln.yaml as ${JSON.stringify(template)}, which is not a relative path inside the repository`, {
      hint: 'a build records kiln.yaml relative to the repository root (e.g. kiln.yaml or images/web/kiln.yaml); this record was altered: do not use it',
    });
  }
  return template;
}

const ROOT_KINDS: readonly ReleaseRoot['kind'][] = ['debian-archive', 'vendor-image'];

export function validateRecord(r: ReleaseRecord): void {
  checkName(r.name);
  checkVersion(r.version);
  if (!Number.isInteger(r.sourceDateEpoch) || r.sourceDateEpoch < 0) throw new KilnError(`release record: sourceDateEpoch must be a non-negative integer, got ${r.sourceDateEpoch}`);
  checkCommit(r.git?.commit, `${r.name}@${r.version}`);
  if (!r.artifacts.length) throw new KilnError('release record: a release needs at least one artifact');
  const files = new Set<string>();
  for (const a of r.artifacts) {
    if (!/^[a-f0-9]{64}$/.test(a.sha256)) throw new KilnError(`release record: artifact ${a.file}: sha256 must be 64 hex digits`);
    if (files.has(a.file)) throw new KilnError(`release record: two artifacts named ${a.file}`);
    files.add(a.file);
  }
  // What a release writes now is checked; what older releases hold is read leniently (ancestry.ts).
  if (r.parents.length > 1) throw new KilnError(`release record: ${r.parents.length} parents; a child release is built on exactly one`);
  for (const p of r.parents) {
    checkName(p.name);
    checkVersion(p.version);
    if (typeof p.digest !== 'string' || !isDigest(p.digest)) throw new KilnError(`release record: parent ${p.name}@${p.version}: digest must be sha256:<64 hex digits>, got ${JSON.stringify(p.digest)}`);
    if (p.channel !== undefined) checkVersion(p.channel);
  }
  if (r.root && !ROOT_KINDS.includes(r.root.kind)) throw new KilnError(`release record: root kind must be one of ${ROOT_KINDS.join(', ')}, got ${JSON.stringify(r.root.kind)}`);
}

export const SBOM_FILE = 'sbom.spdx.json';
export const PROVENANCE_FILE = 'provenance.intoto.json';

/** The release manifest: config = record, one layer per artifact, then the SBOM and the provenance. */
export function releaseManifest(record: ReleaseRecord, config: Descriptor, artifactLayers: Descriptor[], sbom: Descriptor, provenance: Descriptor): ImageManifest {
  const annotations: Record<string, string> = {
    [ANN.version]: record.version,
    [ANN.created]: isoFromEpoch(record.sourceDateEpoch),
    [ANN.revision]: record.git.commit,
    [ANN.title]: record.name,
    [ANN.name]: record.name,
  };
  if (record.git.repository) annotations[ANN.source] = record.git.repository;
  // A child names its parent the way image-spec names a base image, so registries and tools that
  // know those keys show the lineage without reading the record.
  const parent = record.parents[0];
  if (parent) {
    annotations[ANN.baseName] = `${parent.name}@${parent.version}`;
    annotations[ANN.baseDigest] = parent.digest;
  }
  return {
    schemaVersion: 2,
    mediaType: MT.manifest,
    artifactType: MT.release,
    config,
    layers: [
      ...artifactLayers,
      { ...sbom, annotations: { [ANN.title]: SBOM_FILE } },
      { ...provenance, annotations: { [ANN.title]: PROVENANCE_FILE } },
    ],
    annotations,
  };
}

export function artifactLayer(a: { format: string; file: string; size: number; sha256: string; mediaType: string }): Descriptor {
  return { mediaType: a.mediaType, digest: `sha256:${a.sha256}`, size: a.size, annotations: { [ANN.title]: a.file, [ANN.format]: a.format } };
}
