import { firstbootProblem, installFirstboot, type FirstbootUnit } from '../firstboot.js';
import { glob, isFile, remove } from '../tree.js';
import type { SealOperation } from '../types.js';

export const sshKeysUnit: FirstbootUnit = {
  name: 'kiln-firstboot-ssh-keys.service',
  description: 'Generate this machine\'s SSH host keys (kiln first boot)',
  unlessExists: '/etc/ssh/ssh_host_ed25519_key',
  before: ['ssh.service', 'sshd.service'],
  wantedBy: ['multi-user.target', 'ssh.service'],
  exec: '/usr/bin/ssh-keygen -A',
};

const hasSshd = (root: string) => isFile(root, '/usr/sbin/sshd');

export const sshHostkeys: SealOperation = {
  name: 'ssh-hostkeys',
  description: 'Remove SSH host keys; each clone generates its own on first boot',
  async apply(root, ctx) {
    const changed = glob(root, '/etc/ssh/ssh_host_*').flatMap((p) => remove(root, p, ctx));
    if (hasSshd(root)) changed.push(...installFirstboot(root, sshKeysUnit, ctx));
    return changed;
  },
  async check(root) {
    const found = glob(root, '/etc/ssh/ssh_host_*').map((path) => ({ check: this.name, path, message: 'SSH host key baked into the image: every clone would share this identity' }));
    const problem = hasSshd(root) ? firstbootProblem(root, sshKeysUnit) : undefined;
    if (problem) found.push({ check: this.name, path: `/etc/systemd/system/${sshKeysUnit.name}`, message: `sshd is installed but nothing regenerates host keys on first boot: ${problem}` });
    return found;
  },
};
