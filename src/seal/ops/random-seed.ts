import { remove } from '../tree.js';
import type { SealOperation } from '../types.js';
import { statInTree } from '../../image/tree.js';

const SEEDS = ['/var/lib/systemd/random-seed', '/var/lib/urandom/random-seed', '/var/lib/systemd/credential.secret'];

export const randomSeed: SealOperation = {
  name: 'random-seed',
  description: 'Remove the saved random seed and systemd\'s host credential secret',
  async apply(root, ctx) {
    return SEEDS.flatMap((p) => remove(root, p, ctx));
  },
  async check(root) {
    return SEEDS.filter((p) => statInTree(root, p)).map((path) => ({ check: this.name, path, message: 'per-machine random state: every clone would start from the same seed' }));
  },
};
