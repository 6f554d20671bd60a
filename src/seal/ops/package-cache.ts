import { glob, list, remove } from '../tree.js';
import type { SealOperation } from '../types.js';
import { statInTree } from '../../image/tree.js';

/** apt's downloaded packages, binary caches and package lists; `apt update` rebuilds them on a clone. */
function caches(root: string): string[] {
  const lists = list(root, '/var/lib/apt/lists').filter((n) => n !== 'lock' && n !== 'partial').map((n) => `/var/lib/apt/lists/${n}`);
  return [
    ...glob(root, '/var/cache/apt/*.bin'),
    ...glob(root, '/var/cache/apt/archives/*.deb'),
    ...list(root, '/var/cache/apt/archives/partial').map((n) => `/var/cache/apt/archives/partial/${n}`),
    ...lists,
    ...list(root, '/var/lib/apt/lists/partial').map((n) => `/var/lib/apt/lists/partial/${n}`),
  ].filter((p) => statInTree(root, p) !== undefined);
}

export const packageCache: SealOperation = {
  name: 'package-cache',
  description: 'Remove apt\'s downloaded packages, pkgcache.bin and package lists',
  async apply(root, ctx) {
    return caches(root).flatMap((p) => remove(root, p, ctx));
  },
  async check(root) {
    return caches(root).map((path) => ({ check: this.name, path, message: 'package manager cache from the build (stale, and it grows the image)' }));
  },
};
