/**
 * The local flat apt repository of a locked build: exactly the locked .debs, served on 127.0.0.1 to
 * mmdebstrap, and as files to apt in the build sandbox (which has no network in a locked build), so nothing
 * else can be installed. Its sources line is `[trusted=yes]`: no signature is needed because every
 * .deb in it was checked against kiln.lock's sha256, which came from the signed archive index.
 */
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { output } from '../exec.js';
import { packageSetDigest, type LockedSet } from './file.js';
import { debPath } from './fetch.js';
import { repoRelease, repoStanza } from './packages-index.js';
import { commitEntry, entryTemp, intactEntry, removeDeadTemps } from '../cache-entry.js';
import { silentLogger, type Logger } from '../log.js';

/**
 * Packages index of the locked set, cached by the set's digest (dpkg-deb -f on each .deb once) as a
 * cache entry: its record's sha256 and size are checked on every use, so a cut-short index is made again.
 */
export async function lockedPackagesIndex(lock: LockedSet, cacheDir: string, logger: Logger = silentLogger): Promise<string> {
  const dir = join(cacheDir, 'lock-index');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${packageSetDigest(lock)}.Packages`);
  const record = join(dir, `${packageSetDigest(lock)}.json`);
  if (await intactEntry(file, record, logger)) return readFileSync(file, 'utf8');
  removeDeadTemps(dir);
  const stanzas: string[] = [];
  for (const p of lock.packages) {
    const control = await output('dpkg-deb', ['-f', debPath(cacheDir, p)]);
    stanzas.push(repoStanza(control, p, `debs/${p.sha256}.deb`));
  }
  const text = stanzas.join('\n');
  const tmp = entryTemp(file);
  writeFileSync(tmp, text);
  await commitEntry(tmp, file, record, { packageSet: packageSetDigest(lock) });
  return text;
}

export interface LockedRepo {
  /** e.g. http://127.0.0.1:41234/ (a flat repository: `deb [trusted=yes] <url> ./`), for mmdebstrap on the host. */
  url: string;
  sourcesLine: string;
  /** The same repository as files, for apt in the build sandbox (which has no route to the host): Packages and Release. */
  dir: string;
  /** The .debs it names (debs/<sha256>.deb relative to dir; bound there in the sandbox). */
  debsDir: string;
  close(): Promise<void>;
}

/**
 * Serves Packages, Release and the locked .debs (and nothing else) until close(), and writes
 * Packages and Release into dir for the sandbox.
 */
export async function serveLockedRepo(lock: LockedSet, cacheDir: string, packages: string, dir: string): Promise<LockedRepo> {
  const pk = Buffer.from(packages);
  const release = Buffer.from(repoRelease(createHash('sha256').update(pk).digest('hex'), pk.length, lock.archive.date));
  mkdirSync(join(dir, 'debs'), { recursive: true });
  writeFileSync(join(dir, 'Packages'), pk);
  writeFileSync(join(dir, 'Release'), release);
  const debs = new Map(lock.packages.map((p) => [`/debs/${p.sha256}.deb`, debPath(cacheDir, p)]));
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0].replace(/^\/\.\//, '/');
    const send = (body: Buffer) => { res.writeHead(200, { 'content-length': body.length }); res.end(req.method === 'HEAD' ? undefined : body); };
    if (path === '/Packages') return send(pk);
    if (path === '/Release') return send(release);
    const file = debs.get(path);
    if (!file) { res.writeHead(404); res.end(); return; }
    // A .deb gone from the cache (removed, unreadable) fails that request, which apt reports
    // naming the package; an exception here would take the whole build down.
    stat(file).then((st) => {
      res.writeHead(200, { 'content-length': st.size, 'content-type': 'application/vnd.debian.binary-package' });
      if (req.method === 'HEAD') { res.end(); return; }
      const body = createReadStream(file);
      body.on('error', () => res.destroy());
      body.pipe(res);
    }, (e: NodeJS.ErrnoException) => {
      res.writeHead(e.code === 'ENOENT' ? 404 : 500);
      res.end();
    });
  });
  await new Promise<void>((ok, fail) => { server.once('error', fail); server.listen(0, '127.0.0.1', () => ok()); });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}/`;
  return {
    url,
    sourcesLine: `deb [trusted=yes] ${url} ./`,
    dir, debsDir: join(cacheDir, 'debs'),
    close: () => new Promise<void>((ok) => { server.closeAllConnections(); server.close(() => ok()); }),
  };
}
