import { glob, remove } from '../tree.js';
import type { SealOperation } from '../types.js';
import { statInTree } from '../../image/tree.js';

/** Leases of dhclient, dhcpcd, NetworkManager and systemd-networkd (when it persisted any). */
const LEASES = [
  '/var/lib/dhcp/*.leases', '/var/lib/dhcp/*.lease', '/var/lib/dhclient/*', '/var/lib/dhcpcd/*.lease', '/var/lib/dhcpcd/*.lease6',
  '/var/lib/dhcpcd5/*.lease', '/var/lib/NetworkManager/*.lease', '/var/lib/NetworkManager/*.leases', '/var/lib/systemd/network/*',
  '/var/lib/wicked/lease-*',
];

function leases(root: string): string[] {
  return [...new Set(LEASES.flatMap((g) => glob(root, g)))].filter((p) => statInTree(root, p)?.isFile()).sort();
}

export const dhcpLeases: SealOperation = {
  name: 'dhcp-leases',
  description: 'Remove DHCP client leases (dhclient, dhcpcd, NetworkManager, systemd-networkd)',
  async apply(root, ctx) {
    return leases(root).flatMap((p) => remove(root, p, ctx));
  },
  async check(root) {
    return leases(root).map((path) => ({ check: this.name, path, message: 'DHCP lease from the build: a clone would ask for this address and server' }));
  },
};
