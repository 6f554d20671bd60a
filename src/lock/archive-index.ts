/**
 * An archive's Packages index, chained to its signature: the InRelease file (already checked with
 * gpgv) gives each index file's sha256; the index is downloaded and kept only if it matches. The
 * lock entries of the tools tree come from it, so each pinned .deb's sha256 traces back to the
 * archive's signing key.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';
import { parsePackagesIndex, type IndexEntry } from './packages-index.js';

/** The signed text of a clearsigned InRelease (what gpgv verified), without armour or dash-escapes. */
export function signedText(inRelease: string): string {
  const m = /^-----BEGIN PGP SIGNED MESSAGE-----\r?\n(?:[^\n]+\r?\n)*?\r?\n([\s\S]*?)\r?\n-----BEGIN PGP SIGNATURE-----/m.exec(inRelease);
  if (!m) throw new KilnError('the archive\'s InRelease is not a clearsigned message');
  return m[1].split('\n').map((l) => (l.startsWith('- ') ? l.slice(2) : l)).join('\n');
}

/** path -> { sha256, size } from the SHA256 section of a Release text. */
export function releaseHashes(release: string): Map<string, { sha256: string; size: number }> {
  const out = new Map<string, { sha256: string; size: number }>();
  let inSha = false;
  for (const line of release.split('\n')) {
    if (/^SHA256:\s*$/.test(line)) { inSha = true; continue; }
    if (inSha && /^\s/.test(line)) {
      const [sha256, size, path] = line.trim().split(/\s+/);
      if (/^[0-9a-f]{64}$/.test(sha256) && path) out.set(path, { sha256, size: Number(size) });
      continue;
    }
    inSha = false;
  }
  return out;
}

/**
 * Downloads dists/<suite>/<component>/binary-amd64/Packages.xz for each component and checks it
 * against the signed InRelease (whose own sha256 must be `inReleaseSha256`, the one gpgv checked).
 */
export async function signedPackagesIndex(o: { mirror: string; suite: string; components: string[]; inReleaseFile: string; inReleaseSha256: string; workDir: string; logger: Logger }): Promise<Map<string, IndexEntry>> {
  const text = readFileSync(o.inReleaseFile);
  if (createHash('sha256').update(text).digest('hex') !== o.inReleaseSha256) {
    throw new KilnError(`${o.inReleaseFile} changed after its signature was checked`);
  }
  const hashes = releaseHashes(signedText(text.toString('utf8')));
  const index = new Map<string, IndexEntry>();
  for (const c of o.components) {
    const path = `${c}/binary-amd64/Packages.xz`;
    const want = hashes.get(path);
    if (!want) throw new KilnError(`the signed InRelease of ${o.suite} lists no ${path}`);
    const url = `${o.mirror.replace(/\/+$/, '')}/dists/${o.suite}/${path}`;
    const file = join(o.workDir, `${o.suite}-${c}-Packages.xz`);
    await exec('curl', ['-fsSL', '--retry', '2', '--connect-timeout', '20', '-o', file, url], { logger: o.logger, hint: 'check source.debian.mirror and the network' });
    const got = createHash('sha256').update(readFileSync(file)).digest('hex');
    if (got !== want.sha256) {
      throw new KilnError(`${url}: sha256 ${got} is not the ${want.sha256} the signed InRelease gives`, { hint: 'the mirror may be mid-update: run it again' });
    }
    const xz = await exec('xz', ['-dc', file], { logger: o.logger, maxCapture: 512 * 1024 * 1024 });
    parsePackagesIndex(xz.stdout, index);
  }
  return index;
}
