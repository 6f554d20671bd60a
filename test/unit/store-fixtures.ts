/** Fixtures for the store tests: small fake artifacts, a release record, a scratch directory. */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeProvenance, makeSbom, type ArtifactInput, type ReleaseParent, type ReleaseRecord, type ReleaseStore, type Signer } from '../../src/store/index.js';

export function scratch(prefix = 'kiln-store-'): string {
  return mkdtempSync(join(process.env.KILN_TEST_TMP ?? tmpdir(), prefix));
}

/** A fresh unencrypted ed25519 key pair (ssh-keygen), comment name@example. */
export function sshKey(dir: string, name: string): { priv: string; pub: string } {
  const priv = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@example`, '-f', priv]);
  return { priv, pub: `${priv}.pub` };
}

/** Fake artifact files with random content (so two calls never share blobs). */
export function fakeArtifacts(dir: string, name: string, version: string, sizes: Record<string, number> = { raw: 3 << 20, qcow2: 1 << 20 }): ArtifactInput[] {
  return Object.entries(sizes).map(([format, size]) => {
    const file = join(dir, `${name}-${version}-${randomBytes(3).toString('hex')}.${format}`);
    const data = randomBytes(size);
    writeFileSync(file, data);
    return { format, file, size, sha256: createHash('sha256').update(data).digest('hex') };
  });
}

export function fakeRecord(name: string, version: string, extra: Partial<ReleaseRecord> = {}): ReleaseRecord {
  return {
    name, version,
    git: { commit: 'a'.repeat(40), tag: version, repository: 'https://git.example/web.git' },
    sourceDateEpoch: 1700000000,
    template: 'kiln.yaml',
    source: {
      mirror: 'http://deb.debian.org/debian', releaseSha256: 'b'.repeat(64),
      packages: [{ name: 'openssh-server', version: '1:9.2p1-2+deb12u3', arch: 'amd64' }, { name: 'bash', version: '5.2.15-2+b7', arch: 'amd64' }],
    },
    materials: [{ uri: 'http://deb.debian.org/debian/dists/bookworm/Release', digest: { sha256: 'b'.repeat(64) } }],
    parents: [],
    buildDurationSeconds: 42,
    kilnVersion: '0.1.0',
    artifacts: [],
    ...extra,
  };
}

/** Publishes a release with fake artifacts; with `parent`, a child release as a build on source.release records it. */
export async function publishFake(store: ReleaseStore, dir: string, name: string, version: string, opts: { signer?: Signer; sizes?: Record<string, number>; parent?: ReleaseParent; artifacts?: ArtifactInput[]; buildSeconds?: number } = {}) {
  const artifacts = opts.artifacts ?? fakeArtifacts(dir, name, version, opts.sizes);
  const record = fakeRecord(name, version, { ...(opts.parent ? { parents: [opts.parent] } : {}), ...(opts.buildSeconds !== undefined ? { buildDurationSeconds: opts.buildSeconds } : {}) });
  const recordWithArtifacts = { ...record, artifacts: artifacts.map((a) => ({ format: a.format, file: a.file.split('/').pop() ?? '', size: a.size, sha256: a.sha256 })) };
  const res = await store.publish({ record, artifacts, sbom: makeSbom(recordWithArtifacts), provenance: makeProvenance(recordWithArtifacts, artifacts), signer: opts.signer });
  return { ...res, artifacts };
}

export function sha256File(p: string): string {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}
