/**
 * Kiln's own layer on the base tree, written before the playbook runs: what makes any Kiln image
 * boot into a working, distinct machine. Networking matches NICs by type, never by MAC, so clones
 * with new MACs come up; cloud-init injects users and keys but does not write MAC-bound network config.
 */
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface LayerSpec { hostname: string }

export const NETWORKD_DHCP = `# kiln: DHCP on every ethernet NIC, whatever its name or MAC address.
[Match]
Type=ether
Name=!veth* !docker* !br*

[Network]
DHCP=yes
LinkLocalAddressing=ipv6

[DHCPv4]
UseHostname=false
`;

export const CLOUD_INIT_CFG = `# kiln: cloud-init provisions users and keys; networking is the image's own (match by type, not MAC).
network:
  config: disabled
`;

function write(root: string, path: string, content: string, mode = 0o644): void {
  const p = join(root, path);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, content, { mode });
}

function enable(root: string, unit: string, target: string, unitDir = '/lib/systemd/system'): void {
  const link = join(root, 'etc/systemd/system', `${target}.wants`, unit);
  mkdirSync(dirname(link), { recursive: true });
  rmSync(link, { force: true });
  symlinkSync(`${unitDir}/${unit}`, link);
}

export function applyImageLayer(root: string, spec: LayerSpec): void {
  write(root, 'etc/hostname', `${spec.hostname}\n`);
  write(root, 'etc/hosts', `127.0.0.1\tlocalhost\n127.0.1.1\t${spec.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n`);
  write(root, 'etc/systemd/network/80-kiln-dhcp.network', NETWORKD_DHCP);
  write(root, 'etc/cloud/cloud.cfg.d/90-kiln.cfg', CLOUD_INIT_CFG);
  enable(root, 'systemd-networkd.service', 'multi-user');
  enable(root, 'systemd-networkd.socket', 'sockets');
  enable(root, 'systemd-networkd-wait-online.service', 'network-online');
  // Serial console login, for clouds and for debugging with `kiln boot --console`.
  enable(root, 'serial-getty@.service', 'getty', '/lib/systemd/system');
  rmSync(join(root, 'etc/systemd/system/getty.target.wants/serial-getty@.service'), { force: true });
  const serial = join(root, 'etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service');
  rmSync(serial, { force: true });
  symlinkSync('/lib/systemd/system/serial-getty@.service', serial);
}
