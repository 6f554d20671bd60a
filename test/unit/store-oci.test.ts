import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { canonicalJson, EMPTY_DESCRIPTOR, isoFromEpoch, referrersTag, sha256Digest } from '../../src/store/oci.js';
import { makeProvenance } from '../../src/store/provenance.js';
import { artifactLayer, releaseManifest } from '../../src/store/record.js';
import { parseChallenge, parseOciUrl } from '../../src/store/registry.js';
import { parseReleaseRef } from '../../src/store/release-store.js';
import { debPurl, makeSbom } from '../../src/store/sbom.js';
import { fakeRecord } from './store-fixtures.js';

test('canonical JSON sorts keys at every depth, so equal values give equal digests', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: 'x' } }), '{"a":{"c":"x","d":[2,{"y":2,"z":1}]},"b":1}');
  assert.equal(sha256Digest(canonicalJson({ x: 1, y: 2 })), sha256Digest(canonicalJson({ y: 2, x: 1 })));
});

test('the empty descriptor is the one the image-spec defines', () => {
  assert.equal(EMPTY_DESCRIPTOR.digest, 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a');
  assert.equal(EMPTY_DESCRIPTOR.size, 2);
});

test('release manifest: artifactType, layers with titles, annotations with created = SOURCE_DATE_EPOCH', () => {
  const r = fakeRecord('web', 'release-0.1.0');
  const layer = artifactLayer({ format: 'qcow2', file: 'web.qcow2', size: 10, sha256: 'c'.repeat(64), mediaType: 'application/vnd.kiln.disk.qcow2' });
  const d = { mediaType: 'x', digest: sha256Digest('x'), size: 1 };
  const m = releaseManifest(r, { ...d, mediaType: 'application/vnd.kiln.release.v1+json' }, [layer], { ...d, mediaType: 'application/spdx+json' }, { ...d, mediaType: 'application/vnd.in-toto+json' });
  assert.equal(m.artifactType, 'application/vnd.kiln.release.v1+json');
  assert.equal(m.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(m.annotations?.['org.opencontainers.image.created'], '2023-11-14T22:13:20Z');
  assert.equal(m.annotations?.['org.opencontainers.image.version'], 'release-0.1.0');
  assert.equal(m.annotations?.['org.opencontainers.image.revision'], 'a'.repeat(40));
  assert.equal(m.annotations?.['org.opencontainers.image.source'], 'https://git.example/web.git');
  assert.deepEqual(m.layers.map((l) => l.annotations?.['org.opencontainers.image.title']), ['web.qcow2', 'sbom.spdx.json', 'provenance.intoto.json']);
  assert.deepEqual(m.layers.map((l) => l.mediaType), ['application/vnd.kiln.disk.qcow2', 'application/spdx+json', 'application/vnd.in-toto+json']);
  assert.equal(m.layers[0].digest, `sha256:${'c'.repeat(64)}`);
});

test('SBOM is SPDX 2.3 with a purl per Debian package, deterministic from the record', () => {
  const r = fakeRecord('web', 'release-0.1.0');
  const s = makeSbom(r);
  assert.equal(s.spdxVersion, 'SPDX-2.3');
  assert.equal(s.creationInfo.created, isoFromEpoch(1700000000));
  const ssh = s.packages.find((p) => p.name === 'openssh-server');
  assert.equal(ssh?.versionInfo, '1:9.2p1-2+deb12u3');
  assert.equal(ssh?.downloadLocation, 'NOASSERTION');
  assert.equal(ssh?.externalRefs?.[0].referenceLocator, 'pkg:deb/debian/openssh-server@1%3A9.2p1-2%2Bdeb12u3?arch=amd64');
  assert.ok(s.packages.every((p) => /^SPDXRef-[A-Za-z0-9.-]+$/.test(p.SPDXID)));
  assert.equal(canonicalJson(makeSbom(r)), canonicalJson(s));
  assert.notEqual(makeSbom(fakeRecord('web', 'release-0.2.0')).documentNamespace, s.documentNamespace);
  assert.equal(s.relationships.filter((x) => x.relationshipType === 'CONTAINS').length, 2);
  assert.equal(debPurl({ name: 'libc6', version: '2.36-9', arch: 'amd64' }), 'pkg:deb/debian/libc6@2.36-9?arch=amd64');
});

test('provenance is an in-toto v1 statement with a SLSA v1 predicate over the artifacts', () => {
  const r = fakeRecord('web', 'release-0.1.0');
  const p = makeProvenance(r, [{ format: 'raw', file: '/tmp/x/web.raw', size: 1, sha256: 'd'.repeat(64) }]);
  assert.equal(p._type, 'https://in-toto.io/Statement/v1');
  assert.equal(p.predicateType, 'https://slsa.dev/provenance/v1');
  assert.deepEqual(p.subject, [{ name: 'web.raw', digest: { sha256: 'd'.repeat(64) } }]);
  assert.equal(p.predicate.buildDefinition.externalParameters.repository, 'https://git.example/web.git');
  assert.equal(p.predicate.buildDefinition.externalParameters.ref, 'refs/tags/release-0.1.0');
  assert.equal(p.predicate.buildDefinition.externalParameters.template, 'kiln.yaml');
  assert.deepEqual(p.predicate.buildDefinition.resolvedDependencies[0], { uri: 'http://deb.debian.org/debian/dists/bookworm/Release', digest: { sha256: 'b'.repeat(64) } });
  assert.match(p.predicate.runDetails.builder.id, /kiln@0\.1\.0$/);
});

test('provenance names every input: the repository commit and tree, the lock, the base tree, each .deb, the Ansible and host tools', () => {
  const r = fakeRecord('web', 'release-0.1.0', {
    source: {
      mirror: 'http://deb.debian.org/debian', lockSha256: 'c'.repeat(64), baseSha256: 'e'.repeat(64), baseKey: 'f'.repeat(64),
      packages: [{ name: 'bash', version: '5.2.15-2+b7', arch: 'amd64', sha256: '1'.repeat(64) }],
    } as never,
    build: { gitTree: '2'.repeat(40), ansible: { core: '2.19.11-0+deb13u1', collections: '12.0.0+dfsg-1', controller: 'tools-tree', toolsSuite: 'trixie', toolsInRelease: '3'.repeat(64) }, hostTools: { mmdebstrap: '1.3.5-2', 'qemu-utils': '1:7.2+dfsg-7' } },
  });
  const p = makeProvenance(r, [{ format: 'raw', file: 'web.raw', size: 1, sha256: 'd'.repeat(64) }]);
  const deps = p.predicate.buildDefinition.resolvedDependencies;
  const by = (name: string) => deps.find((d) => d.name === name);
  assert.deepEqual(by('repository')?.digest, { gitCommit: 'a'.repeat(40), gitTree: '2'.repeat(40) });
  assert.equal(by('repository')?.uri, 'git+https://git.example/web.git@refs/tags/release-0.1.0');
  assert.deepEqual(by('kiln.lock')?.digest, { sha256: 'c'.repeat(64) });
  assert.deepEqual(by('base-tree'), { name: 'base-tree', uri: `kiln-base-tree:${'f'.repeat(64)}`, digest: { sha256: 'e'.repeat(64) } });
  assert.deepEqual(by('bash')?.digest, { sha256: '1'.repeat(64) });
  const internal = p.predicate.buildDefinition.internalParameters as Record<string, unknown>;
  assert.deepEqual(internal.ansible, r.build?.ansible);
  assert.deepEqual(internal.hostTools, { mmdebstrap: '1.3.5-2', 'qemu-utils': '1:7.2+dfsg-7' });
});

test('references, store URLs and auth challenges parse', () => {
  assert.deepEqual(parseReleaseRef('web@release-0.1.0'), { name: 'web', selector: 'release-0.1.0' });
  assert.throws(() => parseReleaseRef('web'), /not a release reference/);
  assert.deepEqual(parseOciUrl('oci://127.0.0.1:5000/team/kiln'), { host: '127.0.0.1:5000', prefix: 'team/kiln' });
  assert.deepEqual(parseOciUrl('oci://reg.example'), { host: 'reg.example', prefix: '' });
  const c = parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull"');
  assert.equal(c.scheme, 'bearer');
  assert.equal(c.params.realm, 'https://auth.example/token');
  assert.equal(c.params.service, 'registry.example');
  assert.equal(referrersTag(sha256Digest('x')), `sha256-${sha256Digest('x').slice(7)}`);
});
