/**
 * The registry client against a registry that does not play fair: stand-ins written with node:http
 * that speak just enough of the distribution API for each case, and a second listener that records
 * whatever reaches it, so a test can say who got which credentials.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { KilnError } from '../../src/errors.js';
import { DigestMismatchError } from '../../src/store/blobio.js';
import { realmRefusal, RegistryStore, targetAccess } from '../../src/store/registry.js';
import { scratch } from './store-fixtures.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const USER = 'kiln';
const PASSWORD = 's3cret';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
/** What a hostile listener offers to send: far past every limit the client has, and finite, so a client without limits finishes (and fails the test) instead of filling the machine. */
const FLOOD = 64 << 20;

interface Seen { method: string; path: string; authorization: string | undefined }
interface Listener { url: string; port: number; seen: Seen[]; close(): Promise<void> }

const open: Listener[] = [];
after(async () => { await Promise.all(open.map((l) => l.close())); });

/** A listener on 127.0.0.1 that records every request (method, path, Authorization) before `handle` answers it. */
async function listen(handle: (req: IncomingMessage, res: ServerResponse, url: URL) => void | Promise<void>): Promise<Listener> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    seen.push({ method: req.method ?? '', path: url.pathname, authorization: req.headers.authorization });
    Promise.resolve(handle(req, res, url)).catch((e: Error) => res.destroy(e));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const l: Listener = {
    url: `http://127.0.0.1:${port}`, port, seen,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
  open.push(l);
  return l;
}

/** Answers 401 with a Basic challenge unless the request carries the test credentials. */
function authorized(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.headers.authorization === BASIC) return true;
  req.resume();
  res.writeHead(401, { 'www-authenticate': 'Basic realm="hostile"' }).end();
  return false;
}

/** Reads a request body to its end and answers `status` with `headers`. */
function consume(req: IncomingMessage, res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
  req.resume();
  req.on('end', () => res.writeHead(status, headers).end());
}

/** Writes up to `total` bytes, minding backpressure, until the client goes away; resolves with how many the socket took. */
async function flood(res: ServerResponse, total: number): Promise<number> {
  const chunk = Buffer.alloc(64 << 10, 0x61);
  let sent = 0;
  while (sent < total && !res.destroyed) {
    const n = Math.min(chunk.length, total - sent);
    sent += n;
    if (!res.write(chunk.subarray(0, n))) {
      await new Promise<void>((r) => {
        const done = () => { res.off('drain', done); res.off('close', done); r(); };
        res.on('drain', done);
        res.on('close', done);
      });
    }
  }
  res.end();
  return sent;
}

const blob = Buffer.alloc(1024, 7);
const desc = { mediaType: 'application/octet-stream', digest: sha(blob), size: blob.length };

describe('credentials stay with the registry', () => {
  test('an upload the registry sends to another origin, and a blob it redirects there, go without credentials', async () => {
    const storage = await listen((req, res, url) => {
      if (req.method === 'PATCH') return consume(req, res, 202, { location: `${storage.url}${url.pathname}` });
      if (req.method === 'PUT') return consume(req, res, 201);
      res.writeHead(200).end(blob);
    });
    const reg = await listen((req, res, url) => {
      if (!authorized(req, res)) return;
      if (url.pathname === '/v2/') return void res.writeHead(200).end();
      if (req.method === 'HEAD') return void res.writeHead(404).end();
      if (req.method === 'POST') return void res.writeHead(202, { location: `${storage.url}/upload/1` }).end();
      if (req.method === 'GET') return void res.writeHead(307, { location: `${storage.url}/blob` }).end();
      res.writeHead(400).end();
    });
    const store = new RegistryStore(`oci://127.0.0.1:${reg.port}`, { user: USER, password: PASSWORD, chunkSize: 400 });
    const dir = scratch();
    writeFileSync(join(dir, 'blob'), blob);
    await store.putBlob('web', { digest: desc.digest, size: desc.size, bytes: blob });
    await store.putBlob('web', { digest: desc.digest, size: desc.size, file: join(dir, 'blob') });
    assert.deepEqual((await store.readBlob('web', desc)), blob);
    // The monolithic PUT, three PATCHes and a closing PUT of the chunked upload, and the redirected GET.
    assert.deepEqual(storage.seen.map((s) => s.method), ['PUT', 'PATCH', 'PATCH', 'PATCH', 'PUT', 'GET']);
    assert.deepEqual(storage.seen.filter((s) => s.authorization !== undefined), []);
    // The registry itself did get them: the test would pass vacuously if no credentials were sent at all.
    assert.ok(reg.seen.some((s) => s.authorization === BASIC));
  });

  test('a token service the registry names over plain http on another origin is refused and sent nothing', async () => {
    const tokens = await listen((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"stolen"}'); });
    const reg = await listen((req, res) => {
      if (req.headers.authorization === 'Bearer stolen') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"tags":["v1"]}');
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${tokens.url}/token",service="hostile"` }).end();
    });
    const store = new RegistryStore(`oci://127.0.0.1:${reg.port}`, { user: USER, password: PASSWORD });
    await assert.rejects(store.listTags('web'), (e: Error) => e instanceof KilnError && /token service/.test(e.message) && e.message.includes(tokens.url));
    assert.deepEqual(tokens.seen, []);
  });

  test('tag list pages stay on the registry: a Link to another origin is refused, a Link without end stops', { timeout: 60_000 }, async () => {
    const elsewhere = await listen((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"tags":["x"]}'); });
    let pages = 0;
    const reg = await listen((req, res, url) => {
      if (!authorized(req, res)) return;
      if (url.pathname === '/v2/') return void res.writeHead(200).end();
      pages++;
      const next = url.pathname.startsWith('/v2/away/') ? `${elsewhere.url}/v2/away/tags/list?last=a` : `/v2/endless/tags/list?n=1000&last=t${pages}`;
      res.writeHead(200, { 'content-type': 'application/json', link: `<${next}>; rel="next"` }).end(JSON.stringify({ tags: [`t${pages}`] }));
    });
    const store = new RegistryStore(`oci://127.0.0.1:${reg.port}`, { user: USER, password: PASSWORD });
    await assert.rejects(store.listTags('away'), (e: Error) => e instanceof KilnError && /another origin/.test(e.message) && e.message.includes(elsewhere.url));
    assert.deepEqual(elsewhere.seen, []);
    pages = 0;
    await assert.rejects(store.listTags('endless'), (e: Error) => e instanceof KilnError && /more than 1000 pages/.test(e.message));
    assert.equal(pages, 1000);
  });
});

describe('where credentials may go, by rule (https cases the loopback stand-ins cannot play)', () => {
  const https = new URL('https://registry.example');
  const loopback = new URL('http://127.0.0.1:5000');
  const at = (u: string) => new URL(u);

  test('the registry\'s own origin gets them; another is followed without them, never from https down to http', () => {
    assert.deepEqual(targetAccess(https, at('https://registry.example/v2/web/blobs/uploads/1')), { credentials: true });
    assert.deepEqual(targetAccess(https, at('https://registry.example:443/v2/')), { credentials: true });
    assert.deepEqual(targetAccess(https, at('https://registry.example:8443/v2/')), { credentials: false });
    assert.deepEqual(targetAccess(https, at('https://storage.example/upload/1')), { credentials: false });
    assert.deepEqual(targetAccess(loopback, at('http://127.0.0.1:5001/upload/1')), { credentials: false });
    assert.deepEqual(targetAccess(loopback, at('http://localhost:5000/v2/')), { credentials: false });
    for (const u of ['http://registry.example/v2/', 'http://storage.example/upload/1', 'data:,hello', 'file:///etc/passwd']) {
      assert.ok('refused' in targetAccess(https, at(u)), u);
    }
  });

  test('a token service gets them over https on any host, over plain http only at the registry\'s own origin', () => {
    assert.equal(realmRefusal(https, at('https://auth.example/token')), null);
    assert.equal(realmRefusal(loopback, at('https://auth.example/token')), null);
    assert.equal(realmRefusal(loopback, at('http://127.0.0.1:5000/token')), null);
    assert.match(realmRefusal(loopback, at('http://127.0.0.1:5001/token')) ?? '', /plain http/);
    assert.match(realmRefusal(https, at('http://registry.example/token')) ?? '', /plain http/);
    assert.match(realmRefusal(https, at('http://auth.example/token')) ?? '', /plain http/);
  });
});

describe('reads are bounded', () => {
  test('a manifest, a tag list page or an error body past its limit is cut off there, naming the URL and the limit', async () => {
    const served: Promise<number>[] = [];
    const reg = await listen((req, res, url) => {
      if (url.pathname === '/v2/') return void res.writeHead(200).end();
      const status = url.pathname.endsWith('/broken') ? 500 : 200;
      res.writeHead(status, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      served.push(flood(res, FLOOD));
    });
    const store = new RegistryStore(`oci://127.0.0.1:${reg.port}`);
    await assert.rejects(store.getManifest('web', 'v1'), (e: Error) => e instanceof KilnError && e.message.includes(`${reg.url}/v2/web/manifests/v1`) && /larger than 4 MiB/.test(e.message));
    await assert.rejects(store.listTags('web'), (e: Error) => e instanceof KilnError && e.message.includes(`${reg.url}/v2/web/tags/list`) && /larger than 4 MiB/.test(e.message));
    await assert.rejects(store.getManifest('web', 'broken'), (e: Error) => e instanceof KilnError && /HTTP 500/.test(e.message));
    for (const n of await Promise.all(served)) assert.ok(n < FLOOD, `the client read all ${n} bytes of a flood`);
  });

  test('a pulled blob is held to its descriptor: longer, cut short or other bytes are refused and leave no file', async () => {
    let mode: 'long' | 'short' | 'other' = 'long';
    const served: Promise<number>[] = [];
    const reg = await listen((_req, res, url) => {
      if (url.pathname === '/v2/') return void res.writeHead(200).end();
      if (mode === 'long') { res.writeHead(200); served.push(flood(res, FLOOD)); return; }
      if (mode === 'other') return void res.writeHead(200).end(Buffer.alloc(blob.length, 8));
      res.writeHead(200, { 'content-length': String(blob.length) });
      res.write(blob.subarray(0, 512));
      setTimeout(() => res.destroy(), 20);
    });
    const store = new RegistryStore(`oci://127.0.0.1:${reg.port}`);
    const dir = scratch();
    const dest = (n: string) => join(dir, n);
    const tooLong = (e: Error) => e instanceof DigestMismatchError && /more than 1024 bytes/.test(e.message);

    await assert.rejects(store.downloadBlob('web', desc, dest('long')), tooLong);
    assert.equal(existsSync(dest('long')), false);
    await assert.rejects(store.readBlob('web', desc), tooLong);
    await assert.rejects(store.verifyBlob('web', desc), tooLong);
    for (const n of await Promise.all(served)) assert.ok(n < FLOOD, `the client read all ${n} bytes of a flood`);

    mode = 'short';
    await assert.rejects(store.downloadBlob('web', desc, dest('short')), (e: Error) => e instanceof KilnError && /broke off/.test(e.message));
    assert.equal(existsSync(dest('short')), false);

    mode = 'other';
    await assert.rejects(store.downloadBlob('web', desc, dest('other')), (e: Error) => e instanceof DigestMismatchError && e.message.includes(desc.digest));
    assert.equal(existsSync(dest('other')), false);
  });
});

describe('uploads from a file that cannot be read', () => {
  test('fail with a KilnError naming the file, monolithic or chunked, without hanging', { timeout: 20_000 }, async () => {
    const reg = await listen((req, res) => {
      if (req.method === 'HEAD') return void res.writeHead(404).end();
      if (req.method === 'POST') return void res.writeHead(202, { location: '/v2/web/blobs/uploads/u1' }).end();
      if (req.method === 'PATCH') return consume(req, res, 202, { location: '/v2/web/blobs/uploads/u1' });
      if (req.method === 'PUT') return consume(req, res, 201);
      res.writeHead(200).end();
    });
    const dir = scratch();
    // A directory opens but fails on the first read (EISDIR), like a disk error in mid-file; a missing file fails at open.
    const unreadable = { file: dir, digest: desc.digest, size: 10 };
    const vanished = { file: join(dir, 'gone'), digest: desc.digest, size: 10 };
    for (const chunkSize of [1 << 20, 4]) {
      const store = new RegistryStore(`oci://127.0.0.1:${reg.port}`, { chunkSize });
      await assert.rejects(store.putBlob('web', unreadable), (e: Error) => e instanceof KilnError && /cannot read/.test(e.message) && e.message.includes(dir) && /EISDIR/.test(e.message));
      await assert.rejects(store.putBlob('web', vanished), (e: Error) => e instanceof KilnError && /cannot read/.test(e.message) && e.message.includes('gone') && /ENOENT/.test(e.message));
    }
  });
});
