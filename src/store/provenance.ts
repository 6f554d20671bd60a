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

/**
 * Upstream inputs: the record's materials (archive InRelease, keyring), the repository at its
 * commit, the lock and the base tree with their digests, then every package whose .deb digest is
 * known (a locked build knows them all) and parent releases.
 */
export function materialsOf(record: ReleaseRecord): Material[] {
  const out: Material[] = [...(record.materials ?? [])];
  const src = record.source as { lockSha256?: string; baseSha256?: string; baseKey?: string };
  if (record.git.commit) {
    out.push({ name: 'repository', uri: `git+${record.git.repository ?? 'repository'}@${record.git.tag ? `refs/tags/${record.git.tag}` : record.git.commit}`, digest: { gitCommit: record.git.commit, ...(record.build?.gitTree ? { gitTree: record.build.gitTree } : {}) } });
  }
  if (src.lockSha256) out.push({ name: 'kiln.lock', uri: 'kiln.lock', digest: { sha256: src.lockSha256 } });
  if (src.baseSha256) out.push({ name: 'base-tree', uri: `kiln-base-tree:${src.baseKey ?? ''}`, digest: { sha256: src.baseSha256 } });
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
        internalParameters: {
          name: record.name, version: record.version, sourceDateEpoch: record.sourceDateEpoch,
          ...(record.build?.ansible ? { ansible: record.build.ansible } : {}),
          ...(record.build ? { hostTools: record.build.hostTools } : {}),
        },
        resolvedDependencies: materialsOf(record),
      },
      runDetails: {
        builder: { id: `${BUILDER_ID}/kiln@${record.kilnVersion}`, version: { kiln: record.kilnVersion } },
        metadata: { invocationId: `${record.name}@${record.version}` },
      },
    },
  };
}
