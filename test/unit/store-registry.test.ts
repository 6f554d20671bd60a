import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { loadSigner, loadTrustedKey, openStore, TagExistsError } from '../../src/store/index.js';
import { RegistryStore } from '../../src/store/registry.js';
import { ReleaseConflictError } from '../../src/store/release-store.js';
import { fakeArtifacts, publishFake, scratch, sha256File } from './store-fixtures.js';
import { startRegistry, type TestRegistry } from './store-registry-fixture.js';
import { requireOnHost } from './host-requirements.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('registry store without auth', () => {
  let reg: TestRegistry;
  before(async () => { reg = await startRegistry(); });
  after(async () => { await reg?.stop(); });

  test('publish, list, resolve and verify in a registry; immutable there too', async () => {
    const dir = scratch();
    const spec = `oci://127.0.0.1:${reg.port}/kiln`;
    const store = await openStore(spec, dir, { chunkSize: 1 << 20 });
    const { digest, artifacts } = await publishFake(store, dir, 'web', 'release-0.1.0');
    const r = await store.resolve('web@release-0.1.0', { format: 'raw' });
    assert.equal(r.digest, digest);
    assert.equal(r.reference, `127.0.0.1:${reg.port}/kiln/web@${digest}`);
    assert.equal(r.artifact?.location, `127.0.0.1:${reg.port}/kiln/web@sha256:${artifacts[0].sha256}`);
    // The raw blob (3 MiB) went up in 1 MiB chunks; read it back and check it.
    const blob = await fetch(`${reg.url}/v2/kiln/web/blobs/sha256:${artifacts[0].sha256}`);
    assert.equal(sha(Buffer.from(await blob.arrayBuffer())), `sha256:${artifacts[0].sha256}`);
    assert.equal((await store.verify('web@release-0.1.0')).ok, true);
    await assert.rejects(publishFake(store, dir, 'web', 'release-0.1.0'), (e: Error) => e instanceof ReleaseConflictError && e.message.includes(digest));
    const same = await publishFake(store, dir, 'web', 'release-0.1.0', { artifacts, buildSeconds: 7 });
    assert.deepEqual([same.identical, same.digest], [true, digest]);
    // Two runners racing for one version through the registry: same content both pass; other content, one fails naming both.
    const shared = fakeArtifacts(dir, 'web', 'race', { raw: 2 << 20 });
    const both = await Promise.all([publishFake(store, dir, 'web', 'race-1', { artifacts: shared, buildSeconds: 1 }), publishFake(store, dir, 'web', 'race-1', { artifacts: shared, buildSeconds: 2 })]);
    assert.deepEqual(both.map((r) => r.identical).sort(), [false, true]);
    const there = (await store.release('web', 'race-1'))?.digest;
    assert.deepEqual(both.map((r) => r.digest), [there, there]);
    const raced = await Promise.allSettled([publishFake(store, dir, 'web', 'race-2'), publishFake(store, dir, 'web', 'race-2')]);
    assert.deepEqual(raced.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    const lost = raced.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    const won = (await store.release('web', 'race-2'))?.digest ?? '';
    assert.ok(lost.reason instanceof ReleaseConflictError && (lost.reason as Error).message.includes(won), String(lost.reason));
    // The second check, right before the manifest: a tag that appears during the upload still wins.
    const backend = store.backend as RegistryStore;
    await assert.rejects(backend.createTag('web', 'release-0.1.0', Buffer.from('{}'), 'application/vnd.oci.image.manifest.v1+json'), /already exists/);
    await publishFake(store, dir, 'web', 'release-0.2.0');
    await store.channelSet('production', 'web@release-0.2.0');
    await store.revoke('web@release-0.1.0', 'bad');
    const list = await store.list();
    assert.deepEqual(list.map((l) => `${l.name}@${l.version}:${l.status}`), ['web@race-1:ok', 'web@race-2:ok', 'web@release-0.1.0:revoked', 'web@release-0.2.0:ok']);
    assert.equal((await store.resolve('web@production')).version, 'release-0.2.0');
    await assert.rejects(store.resolve('web@release-0.1.0'), /revoked: bad/);
  });

  test('skopeo sees the same manifest in the registry and in the layout', async () => {
    requireOnHost('/usr/bin/skopeo', 'package skopeo');
    const dir = scratch();
    const local = await openStore(join(dir, 'store'), dir);
    const { digest } = await publishFake(local, dir, 'app', 'v1');
    const remote = await openStore(`oci://127.0.0.1:${reg.port}/kiln`, dir);
    await local.copyTo(remote, 'app@v1');
    const fromRegistry = spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://127.0.0.1:${reg.port}/kiln/app:v1`]);
    assert.equal(fromRegistry.status, 0, fromRegistry.stderr.toString());
    const fromLayout = spawnSync('skopeo', ['inspect', '--raw', `oci:${join(dir, 'store')}:app:v1`]);
    assert.equal(fromLayout.status, 0, fromLayout.stderr.toString());
    assert.equal(sha(fromRegistry.stdout), digest);
    assert.equal(sha(fromLayout.stdout), digest);
  });

  test('push and pull round trip keeps digests, signatures and revocations; a revocation after the push follows on the next push', async () => {
    const dir = scratch();
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ci@example', '-f', join(dir, 'key')]);
    const signer = await loadSigner(join(dir, 'key'));
    const a = await openStore(join(dir, 'a'), dir, { signer: async () => signer });
    const { digest, artifacts } = await publishFake(a, dir, 'db', 'v7', { signer });
    const remote = await openStore(`oci://127.0.0.1:${reg.port}/mirror`, dir);
    assert.equal((await a.copyTo(remote, 'db@v7')).copied, true);
    await a.revoke('db@v7', 'superseded');
    const again = await a.copyTo(remote, 'db@v7');
    assert.equal(again.copied, false, 'the release was there already');
    assert.deepEqual(again.metadata, { action: 'copied', seq: 2 }, 'but the signed revocation is copied');
    const b = await openStore(join(dir, 'b'), dir, { trust: { requireSignature: true, keys: [await loadTrustedKey(join(dir, 'key.pub'))] } });
    await remote.copyTo(b, 'db@v7');
    const r = await b.resolve('db@v7', { format: 'raw', force: true });
    assert.equal(r.digest, digest);
    assert.equal(r.revoked?.reason, 'superseded');
    assert.match(r.signers[0], /ci@example/);
    assert.equal(sha256File(r.artifact!.location), artifacts[0].sha256);
    assert.equal((await b.verify('db@v7')).ok, true);
    // Pushing again is a no-op; pushing a different release under the same version is refused.
    assert.deepEqual((await a.copyTo(remote, 'db@v7')).metadata, { action: 'same', seq: 2 });
    const c = await openStore(join(dir, 'c'), dir);
    await publishFake(c, dir, 'db', 'v7');
    await assert.rejects(c.copyTo(remote, 'db@v7'), /already exists/);
  });
});

describe('registry store with basic auth', () => {
  let reg: TestRegistry;
  before(async () => { reg = await startRegistry({ user: 'kiln', password: 's3cret' }); });
  after(async () => { await reg?.stop(); });

  test('credentials are required, used and checked', async () => {
    const dir = scratch();
    const spec = `oci://127.0.0.1:${reg.port}`;
    const anon = await openStore(spec, dir, { user: undefined, password: undefined });
    await assert.rejects(publishFake(anon, dir, 'web', 'v1'), /requires authentication/);
    const wrong = await openStore(spec, dir, { user: 'kiln', password: 'nope' });
    await assert.rejects(wrong.list(), /refused .* HTTP 401/);
    const store = await openStore(spec, dir, { user: 'kiln', password: 's3cret' });
    const { digest } = await publishFake(store, dir, 'web', 'v1');
    assert.equal((await store.resolve('web@v1', { format: 'qcow2' })).digest, digest);
    assert.deepEqual((await store.list()).map((l) => l.version), ['v1']);
    await assert.rejects(publishFake(store, dir, 'web', 'v1'), /already released .* with other content/);
    const insp = spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', 'kiln:s3cret', `docker://127.0.0.1:${reg.port}/web:v1`]);
    assert.equal(sha(insp.stdout), digest, insp.stderr.toString());
  });
});

/**
 * The bearer token flow: a proxy in front of the registry answers 401 with a Bearer challenge,
 * hands out a token for the right basic credentials, and forwards requests carrying it.
 */
async function bearerProxy(target: number): Promise<{ port: number; scopes: string[]; close(): Promise<void> }> {
  const http = await import('node:http');
  const scopes: string[] = [];
  const server = http.createServer((req, res) => {
    const port = (server.address() as { port: number }).port;
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${port}`);
    if (url.pathname === '/token') {
      if (req.headers.authorization !== 'Basic ' + Buffer.from('kiln:tok3n').toString('base64')) { res.writeHead(401).end(); return; }
      scopes.push(url.searchParams.get('scope') ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `T:${url.searchParams.get('scope')}` }));
      return;
    }
    if (!req.headers.authorization?.startsWith('Bearer T:')) {
      req.resume();
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="kiln-test"` }).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers.authorization;
    const fwd = http.request({ host: '127.0.0.1', port: target, path: req.url, method: req.method, headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    req.pipe(fwd);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, scopes, close: () => new Promise((r) => server.close(() => r())) };
}

describe('registry store behind a bearer token service', () => {
  let reg: TestRegistry;
  let proxy: Awaited<ReturnType<typeof bearerProxy>>;
  before(async () => { reg = await startRegistry(); proxy = await bearerProxy(reg.port); });
  after(async () => { await proxy?.close(); await reg?.stop(); });

  test('tokens are fetched per repository scope with the basic credentials', async () => {
    const dir = scratch();
    const store = await openStore(`oci://127.0.0.1:${proxy.port}/t`, dir, { user: 'kiln', password: 'tok3n', chunkSize: 1 << 20 });
    const { digest } = await publishFake(store, dir, 'web', 'v1');
    assert.equal((await store.resolve('web@v1', { format: 'raw' })).digest, digest);
    assert.ok(proxy.scopes.includes('repository:t/web:pull,push'), proxy.scopes.join(' '));
    assert.ok(proxy.scopes.includes('repository:t/web:pull'), proxy.scopes.join(' '));
    const bad = await openStore(`oci://127.0.0.1:${proxy.port}/t`, dir, { user: 'kiln', password: 'wrong' });
    await assert.rejects(bad.resolve('web@v1'), /token service .* refused/);
  });
});

/**
 * A registry with immutable tags (Harbor's rule, ECR's IMMUTABLE, Artifact Registry's immutable tags):
 * a stand-in proxy in front of docker-registry that refuses a PUT of a tag that exists, with a 400
 * of its own. While `hide` is set it answers 404 for tags, so Kiln's own two checks pass and the
 * registry's refusal is what it meets: the publish must read the tag then and decide as in a race.
 */
describe('registry store with immutable tags (a stand-in proxy in front of docker-registry)', () => {
  let reg: TestRegistry;
  let proxy: Server;
  let port = 0;
  let hide = false;
  const refused: string[] = [];
  before(async () => {
    reg = await startRegistry();
    proxy = createServer((req, res) => {
      const m = /^\/v2\/(.+)\/manifests\/([^/?]+)$/.exec(req.url ?? '');
      const isTag = m && !m[2].startsWith('sha256:');
      const forward = () => {
        const up = httpRequest({ host: '127.0.0.1', port: reg.port, path: req.url, method: req.method, headers: req.headers }, (r) => { res.writeHead(r.statusCode ?? 502, r.headers); r.pipe(res); });
        req.pipe(up);
      };
      if (isTag && hide && (req.method === 'GET' || req.method === 'HEAD')) { req.resume(); res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'); return; }
      if (isTag && req.method === 'PUT') {
        void fetch(`${reg.url}/v2/${m[1]}/manifests/${m[2]}`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } }).then((h) => {
          if (h.status !== 200) { forward(); return; }
          req.resume();
          refused.push(m[2]);
          hide = false;
          res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'TAG_INVALID', message: `tag ${m[2]} is immutable` }] }));
        });
        return;
      }
      forward();
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    port = (proxy.address() as AddressInfo).port;
  });
  after(async () => { proxy?.close(); await reg?.stop(); });

  test('the registry refuses the second tag: the same artifacts are "identical", others a conflict naming both; the first release stays', async () => {
    const dir = scratch();
    const direct = await openStore(`oci://127.0.0.1:${reg.port}/kiln`, dir);
    const viaProxy = await openStore(`oci://127.0.0.1:${port}/kiln`, dir);
    const first = await publishFake(direct, dir, 'web', 'v1');
    hide = true;
    const same = await publishFake(viaProxy, dir, 'web', 'v1', { artifacts: first.artifacts, buildSeconds: 5 });
    assert.deepEqual(refused, ['v1'], 'the registry refused the tag, not Kiln\'s checks');
    assert.deepEqual([same.identical, same.digest], [true, first.digest]);
    hide = true;
    await assert.rejects(publishFake(viaProxy, dir, 'web', 'v1'), (e: Error) => e instanceof ReleaseConflictError && e.message.includes(first.digest));
    assert.deepEqual(refused, ['v1', 'v1']);
    assert.equal((await direct.release('web', 'v1'))?.digest, first.digest);
    // A new version through the same registry is an ordinary publish.
    hide = false;
    assert.equal((await publishFake(viaProxy, dir, 'web', 'v2')).identical, false);
  });
});
