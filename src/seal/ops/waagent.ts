import { isDir, isFile, list, removeContents } from '../tree.js';
import type { SealOperation } from '../types.js';

/**
 * The offline equivalent of `waagent -force -deprovision`: the agent's state (provisioning data,
 * certificates, goal states) goes. Host keys, leases and logs are left to their own operations.
 * There is no provisioned user to delete in an image built from a tree.
 */
const LIB = '/var/lib/waagent';

const installed = (root: string) => isDir(root, LIB) || isFile(root, '/usr/sbin/waagent');

export const waagent: SealOperation = {
  name: 'waagent',
  description: 'Deprovision the Azure Linux agent when installed (its provisioning state and certificates)',
  async apply(root, ctx) {
    if (!installed(root)) return [];
    return removeContents(root, LIB, ctx);
  },
  async check(root) {
    if (!installed(root)) return [];
    return list(root, LIB).map((n) => ({ check: this.name, path: `${LIB}/${n}`, message: 'Azure agent state from the build: it may hold provisioning secrets and certificates' }));
  },
};
