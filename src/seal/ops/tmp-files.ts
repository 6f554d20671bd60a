import { list, removeContents } from '../tree.js';
import type { SealOperation } from '../types.js';

const TMP = ['/tmp', '/var/tmp'];

export const tmpFiles: SealOperation = {
  name: 'tmp-files',
  description: 'Remove everything under /tmp and /var/tmp',
  async apply(root, ctx) {
    return TMP.flatMap((d) => removeContents(root, d, ctx));
  },
  async check(root) {
    return TMP.flatMap((d) => list(root, d).map((n) => ({ check: this.name, path: `${d}/${n}`, message: 'temporary file from the build' })));
  },
};
