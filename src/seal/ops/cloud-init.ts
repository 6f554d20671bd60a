import { glob, list, remove, removeContents } from '../tree.js';
import type { SealOperation } from '../types.js';

/**
 * What `cloud-init clean --logs --seed` leaves: no instance state, so cloud-init runs as on a new
 * instance (users, keys, hostname, network config from the datasource). Configuration in
 * /etc/cloud stays.
 */
const STATE = '/var/lib/cloud';
const LOGS = ['/var/log/cloud-init.log', '/var/log/cloud-init-output.log'];

export const cloudInit: SealOperation = {
  name: 'cloud-init',
  description: 'Reset cloud-init as `cloud-init clean --logs --seed` does (instances, seed, logs)',
  async apply(root, ctx) {
    return [...removeContents(root, STATE, ctx), ...LOGS.flatMap((p) => glob(root, p)).flatMap((p) => remove(root, p, ctx))];
  },
  async check(root) {
    return list(root, STATE).map((n) => ({ check: this.name, path: `${STATE}/${n}`, message: 'cloud-init state from the build: clones would skip per-instance setup' }));
  },
};
