/**
 * SPDX 2.3 JSON SBOM of the Debian packages in a release. Deterministic: the namespace and the
 * creation time derive from the release and SOURCE_DATE_EPOCH, packages are sorted.
 */
import { KILN_VERSION } from '../version.js';
import { isoFromEpoch, sha256Hex } from './oci.js';
import type { ReleaseRecord, SourcePackage } from './record.js';

export interface SpdxPackage {
  name: string;
  SPDXID: string;
  versionInfo?: string;
  downloadLocation: string;
  filesAnalyzed: boolean;
  supplier?: string;
  primaryPackagePurpose?: string;
  externalRefs?: { referenceCategory: string; referenceType: string; referenceLocator: string }[];
}

export interface SpdxDocument {
  spdxVersion: 'SPDX-2.3';
  dataLicense: 'CC0-1.0';
  SPDXID: 'SPDXRef-DOCUMENT';
  name: string;
  documentNamespace: string;
  creationInfo: { created: string; creators: string[] };
  packages: SpdxPackage[];
  relationships: { spdxElementId: string; relationshipType: string; relatedSpdxElement: string }[];
}

/** Package URL of a Debian binary package (purl-spec, type deb). */
export function debPurl(p: SourcePackage): string {
  return `pkg:deb/debian/${encodeURIComponent(p.name)}@${encodeURIComponent(p.version)}?arch=${encodeURIComponent(p.arch)}`;
}

/** SPDX ids allow letters, digits, "." and "-" only. */
function spdxId(...parts: string[]): string {
  return 'SPDXRef-' + parts.join('-').replace(/[^A-Za-z0-9.-]/g, (c) => `-${c.charCodeAt(0).toString(16)}-`);
}

export function makeSbom(record: ReleaseRecord): SpdxDocument {
  const pkgs = [...(record.source.packages ?? [])].sort((a, b) => (a.name + '\0' + a.arch).localeCompare(b.name + '\0' + b.arch));
  const imageId = spdxId('Image', record.name);
  const packages: SpdxPackage[] = [{
    name: record.name,
    SPDXID: imageId,
    versionInfo: record.version,
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    primaryPackagePurpose: 'OPERATING-SYSTEM',
  }];
  const relationships = [{ spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: imageId }];
  for (const p of pkgs) {
    const id = spdxId('Package', 'deb', p.name, p.arch);
    packages.push({
      name: p.name,
      SPDXID: id,
      versionInfo: p.version,
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      supplier: 'NOASSERTION',
      externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: debPurl(p) }],
    });
    relationships.push({ spdxElementId: imageId, relationshipType: 'CONTAINS', relatedSpdxElement: id });
  }
  const listHash = sha256Hex(pkgs.map((p) => `${p.name} ${p.version} ${p.arch}`).join('\n'));
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `${record.name}@${record.version}`,
    documentNamespace: `https://kiln.invalid/spdx/${encodeURIComponent(record.name)}/${encodeURIComponent(record.version)}-${listHash.slice(0, 16)}`,
    creationInfo: { created: isoFromEpoch(record.sourceDateEpoch), creators: [`Tool: kiln-${record.kilnVersion || KILN_VERSION}`] },
    packages,
    relationships,
  };
}
