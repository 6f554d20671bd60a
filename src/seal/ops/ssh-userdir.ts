import { privateKeyKind } from '../../audit/patterns.js';
import { child, homes, isFile, list, readText, remove } from '../tree.js';
import type { Finding } from '../../audit/finding.js';
import type { SealOperation } from '../types.js';

/**
 * Private keys and known_hosts in root's and users' ~/.ssh. authorized_keys, *.pub and config stay:
 * they are public, and an authorized_keys is usually what the playbook installed on purpose.
 */
function secrets(root: string): { path: string; why: string }[] {
  const out: { path: string; why: string }[] = [];
  for (const home of homes(root)) {
    const dir = `${home}/.ssh`;
    for (const name of list(root, dir)) {
      const p = child(dir, name);
      if (!isFile(root, p)) continue;
      if (name === 'known_hosts' || name === 'known_hosts.old') out.push({ path: p, why: 'known_hosts records the hosts the build talked to' });
      else if (/^id_[a-z0-9_-]+$/.test(name) || privateKeyKind(readText(root, p, 1 << 20)) !== undefined) out.push({ path: p, why: 'SSH private key in a home directory' });
    }
  }
  return out;
}

export const sshUserdir: SealOperation = {
  name: 'ssh-userdir',
  description: 'Remove private keys and known_hosts from ~/.ssh of root and /home/* (authorized_keys stays)',
  async apply(root, ctx) {
    return secrets(root).flatMap((s) => remove(root, s.path, ctx));
  },
  async check(root) {
    return secrets(root).map((s): Finding => ({ check: this.name, path: s.path, message: s.why }));
  },
};
