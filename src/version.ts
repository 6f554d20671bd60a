
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Kiln's own version, recorded in build records and provenance. */
export const KILN_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

let codeDigest: string | undefined;

/**
 * sha256 over Kiln's own compiled code (every .js file under dist/src, by path and content): part
 * of every step cache key, so outputs made by other code are never reused, even between two
 * builds of Kiln that carry the same version number (a developer's tree, a CI machine's cache).
 */
export function kilnCodeDigest(): string {
  if (codeDigest) return codeDigest;
  const root = new URL('.', import.meta.url).pathname;
  const h = createHash('sha256');
  const visit = (rel: string) => {
    for (const e of readdirSync(join(root, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) visit(p);
      else if (e.isFile() && e.name.endsWith('.js')) h.update(`${p}\0`).update(readFileSync(join(root, p))).update('\0');
    }
  };
  visit('');
  codeDigest = `${KILN_VERSION}+${h.digest('hex').slice(0, 32)}`;
  return codeDigest;
}
