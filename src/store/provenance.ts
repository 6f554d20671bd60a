/**
 * SLSA provenance v1 in an in-toto Statement v1: which artifacts (subjects, by sha256) were built
 * from which repository, ref and template, by which Kiln, from which upstream inputs (materials).
 * No clock time: the statement is a function of the release record.
 */
import type { ArtifactInput, Material, ReleaseArtifact, ReleaseRecord } from './record.js';
import { debPurl } from './sbom.js';

export const BUILD_TYPE = 'https://kiln.invalid/buildtypes/vm-image/v1';
export const BUILDER_ID = 'https://kiln.invalid/builder';

export interface InTotoStatement {
  _type: 'https://in-toto.io/Statement/v1';
  subject: { name: string; digest: { sha256: string } }[];
  predicateType: 'https://slsa.dev/provenance/v1';
  predicate: {
    buildDefinition: {
      buildType: string;
      externalParameters: Record<string, unknown>;
      internalParameters?: Record<string, unknown>;
      resolvedDependencies: Material[];
    };
    runDetails: {
      builder: { id: string; version: Record<string, string> };
      metadata: Record<string, unknown>;
    };
  };
}

/** Upstream inputs: the record's materials, then every package whose .deb digest is known. */
export function materialsOf(record: ReleaseRecord): Material[] {
  const out: Material[] = [...(record.materials ?? [])];
  for (const p of record.source.packages ?? []) {
    if (p.sha256) out.push({ uri: debPurl(p), digest: { sha256: p.sha256 }, name: p.name });
  }
  for (const parent of record.parents) {
    if (parent.digest?.startsWith('sha256:')) out.push({ uri: `kiln-release:${parent.name}@${parent.version}`, digest: { sha256: parent.digest.slice(7) } });
  }
  return out;
}

export function makeProvenance(record: ReleaseRecord, artifacts: (ReleaseArtifact | ArtifactInput)[] = record.artifacts): InTotoStatement {
  const name = (a: ReleaseArtifact | ArtifactInput) => a.file.split('/').pop() ?? a.file;
  const externalParameters: Record<string, unknown> = {
    repository: record.git.repository ?? null,
    ref: record.git.tag ? `refs/tags/${record.git.tag}` : null,
    commit: record.git.commit,
    template: record.template ?? 'kiln.yaml',
  };
  return {
    _type: 'https://in-toto.io/Statement/v1',
    subject: artifacts.map((a) => ({ name: name(a), digest: { sha256: a.sha256 } })),
    predicateType: 'https://slsa.dev/provenance/v1',
    predicate: {
      buildDefinition: {
        buildType: BUILD_TYPE,
        externalParameters,
        internalParameters: { name: record.name, version: record.version, sourceDateEpoch: record.sourceDateEpoch },
        resolvedDependencies: materialsOf(record),
      },
      runDetails: {
        builder: { id: `${BUILDER_ID}/kiln@${record.kilnVersion}`, version: { kiln: record.kilnVersion } },
        metadata: { invocationId: `${record.name}@${record.version}` },
      },
    },
  };
}
