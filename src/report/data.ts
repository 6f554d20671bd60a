/**
 * What `kiln report` shows, read from the store the way every reader reads it: each blob hashed
 * against its descriptor, signatures checked under the reader's trust policy, the signed metadata's
 * channels, revocations and cloud ids, ancestry with inherited status. Nothing here trusts the page
 * it ends up in: the HTML escapes every value (src/report/html.ts).
 */
import { diffPackages } from '../diff/index.js';
import { versionLess } from '../diff/changelog.js';
import { KilnError } from '../errors.js';
import { isoFromEpoch, MT } from '../store/oci.js';
import type { SourcePackage } from '../store/record.js';
import type { ReleaseListing, ReleaseStore } from '../store/release-store.js';
import type { SpdxDocument } from '../store/sbom.js';

export interface ReportRelease {
  name: string;
  version: string;
  digest: string;
  date: string;
  commit: string;
  tag?: string;
  repository?: string;
  template?: string;
  kilnVersion: string;
  buildSeconds?: number;
  status: ReleaseListing['status'];
  statusReason?: string;
  sourceVerified: boolean;
  reference: string;
  store: string;
  artifacts: { format: string; file: string; size: number; digest: string; mediaType: string }[];
  /** Where it is published: cloud → region (or location) → image id. */
  cloudIds: Record<string, Record<string, string>>;
  signatures: { signer: string; kind: string; valid: boolean; trusted: boolean; problem?: string }[];
  metadataSigner?: string;
  revocation?: { reason: string; time: string; by?: string };
  parent?: { ref: string; digest: string; status?: string };
  children: { ref: string; digest: string; status: string }[];
  channels: { channel: string; version: string; here: boolean; log: { version: string; time: string; by?: string }[] }[];
  packages: (SourcePackage & { purl: string })[];
  /** The package diff against the previous version of the same image (by date), when there is one. */
  previous?: { ref: string; added: SourcePackage[]; removed: SourcePackage[]; changed: { name: string; arch: string; from: string; to: string; direction: string }[]; unchanged: number };
  audit: string;
  provenance: {
    builder?: string; buildType?: string; materials: { name?: string; uri: string; digest: string }[];
    ansible?: { core?: string; collections?: string; controller?: string };
    hostTools: Record<string, string>;
  };
  steps?: { name: string; seconds: number }[];
}

export interface StoreIndex {
  store: string;
  generated: string;
  releases: ReleaseListing[];
  channels: { name: string; channel: string; version: string }[];
}

function purlOf(pkgs: SpdxDocument['packages'], p: SourcePackage): string {
  const hit = pkgs.find((x) => x.name === p.name && x.versionInfo === p.version);
  return hit?.externalRefs?.find((r) => r.referenceType === 'purl')?.referenceLocator ?? '';
}

/**
 * Everything the page of one release shows. `all` is the store's listing (store.list()) when the
 * caller has it already: the index passes its own, so a page per release does not list the store again.
 */
export async function releaseReport(store: ReleaseStore, ref: string, all?: ReleaseListing[]): Promise<ReportRelease> {
  const e = await store.entry(ref);
  const d = await store.details(e);
  all ??= await store.list();
  const listing = all.filter((l) => l.name === e.name);
  const me = listing.find((l) => l.digest === e.digest);
  const blob = async <T>(mediaType: string): Promise<T | undefined> => {
    const layer = e.manifest.layers.find((l) => l.mediaType === mediaType);
    return layer ? JSON.parse((await store.backend.readBlob(e.name, layer)).toString('utf8')) as T : undefined;
  };
  const sbom = await blob<SpdxDocument>(MT.sbom);
  const prov = await blob<{ predicate?: { buildDefinition?: { buildType?: string; resolvedDependencies?: { name?: string; uri: string; digest: Record<string, string> }[] }; runDetails?: { builder?: { id?: string } } } }>(MT.provenance);
  const packages = [...(e.record.source.packages ?? [])].sort((a, b) => a.name.localeCompare(b.name)).map((p) => ({ ...p, purl: sbom ? purlOf(sbom.packages, p) : '' }));
  // The previous version: the newest of the same image dated before this one (the store lists by date).
  const older = listing.filter((l) => l.digest !== e.digest && l.date <= me!.date && !(l.date === me!.date && l.version > e.version));
  const prev = older[older.length - 1];
  let previous: ReportRelease['previous'];
  if (prev) {
    const pe = await store.entry(`${prev.name}@${prev.version}`);
    const pd = diffPackages(pe.record.source.packages ?? [], e.record.source.packages ?? [], versionLess);
    previous = { ref: `${prev.name}@${prev.version}`, ...pd };
  }
  const parentRef = e.record.parents[0];
  const parentListing = parentRef ? all.find((l) => l.name === parentRef.name && (l.digest === parentRef.digest || l.version === parentRef.version)) : undefined;
  const children = all.filter((l) => l.parent === `${e.name}@${e.version}`).map((l) => ({ ref: `${l.name}@${l.version}`, digest: l.digest, status: l.status }));
  const channels = (await store.channelList(e.name)).map((c) => ({ channel: c.channel, version: c.version, here: c.digest === e.digest, log: c.log.map((m) => ({ version: m.version, time: m.time, by: m.by })) }));
  const materials = (prov?.predicate?.buildDefinition?.resolvedDependencies ?? e.record.materials ?? []).map((m) => ({ name: m.name, uri: m.uri, digest: Object.entries(m.digest).map(([k, v]) => `${k}:${v}`).join(' ') }));
  return {
    name: e.name, version: e.version, digest: e.digest, date: isoFromEpoch(e.record.sourceDateEpoch), commit: e.record.git.commit, tag: e.record.git.tag,
    repository: e.record.git.repository, template: e.record.template, kilnVersion: e.record.kilnVersion, buildSeconds: e.record.buildDurationSeconds,
    status: me?.status ?? 'ok', statusReason: me?.reason, sourceVerified: me?.sourceVerified ?? true,
    reference: store.reference(e), store: store.location,
    artifacts: e.manifest.layers.filter((l) => l.annotations?.['org.opencontainers.image.title'] && e.record.artifacts.some((a) => `sha256:${a.sha256}` === l.digest)).map((l) => {
      const a = e.record.artifacts.find((x) => `sha256:${x.sha256}` === l.digest)!;
      return { format: a.format, file: a.file, size: a.size, digest: l.digest, mediaType: l.mediaType };
    }),
    cloudIds: d.cloudIds,
    signatures: d.signatures.map((s) => ({ signer: s.check.signer, kind: s.blob.kind, valid: s.check.valid, trusted: s.check.trusted, problem: s.check.problem })),
    metadataSigner: d.metadataSigner,
    revocation: d.revocation,
    parent: parentRef ? { ref: `${parentRef.name}@${parentRef.version}`, digest: parentRef.digest, status: parentListing?.status } : undefined,
    children, channels, packages, previous,
    audit: 'clean: the release was made only after the audit of its finished disk found nothing (secrets, host identities, provisioner artifacts)',
    provenance: {
      builder: prov?.predicate?.runDetails?.builder?.id, buildType: prov?.predicate?.buildDefinition?.buildType, materials,
      ansible: e.record.build?.ansible, hostTools: e.record.build?.hostTools ?? {},
    },
    steps: e.record.build?.steps,
  };
}

/** Every release of the store, with the channels. */
export async function storeIndex(store: ReleaseStore): Promise<StoreIndex> {
  const releases = await store.list();
  if (!releases.length) throw new KilnError(`no releases in ${store.location}`, { hint: 'kiln build releases one; --store names another store' });
  const channels = (await store.channelList()).map((c) => ({ name: c.name, channel: c.channel, version: c.version }));
  return { store: store.location, generated: new Date().toISOString(), releases, channels };
}
