/**
 * Kiln's own layer on the base tree, written before the playbook runs: what makes any Kiln image
 * boot into a working, distinct machine. Networking matches NICs by type, never by MAC, so clones
 * with new MACs come up; cloud-init injects users and keys but does not write MAC-bound network config.
 */
import { symlinkInTree, writeTreeFile } from './tree.js';

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
# The image has no locales package; C.UTF-8 is built in.
locale: false
# The instance's own hostname (meta-data's local-hostname, or the cloud's) resolves locally: cloud-init
# keeps a 127.0.1.1 line naming it in /etc/hosts at every boot and leaves every other line alone.
# Without it, a machine named otherwise than the image looks its name up in DNS, and sudo does so
# on every call: 8 s each where DNS does not answer (measured on a QEMU user-net guest).
manage_etc_hosts: localhost
`;

function write(root: string, path: string, content: string, mode = 0o644): void {
  writeTreeFile(root, `/${path}`, content, mode);
}

/** What `systemctl enable` does for a WantedBy= unit: a symlink in <target>.wants. */
function enable(root: string, unit: string, target: string, unitDir = '/lib/systemd/system', instance = unit): void {
  symlinkInTree(root, `/etc/systemd/system/${target}.wants/${instance}`, `${unitDir}/${unit}`);
}

export function applyImageLayer(root: string, spec: LayerSpec): void {
  write(root, 'etc/hostname', `${spec.hostname}\n`);
  write(root, 'etc/hosts', `127.0.0.1\tlocalhost\n127.0.1.1\t${spec.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n`);
  write(root, 'etc/systemd/network/80-kiln-dhcp.network', NETWORKD_DHCP);
  write(root, 'etc/cloud/cloud.cfg.d/90-kiln.cfg', CLOUD_INIT_CFG);
  enable(root, 'systemd-networkd.service', 'multi-user.target');
  enable(root, 'systemd-networkd.socket', 'sockets.target');
  enable(root, 'systemd-networkd-wait-online.service', 'network-online.target');
  // Serial console login, for clouds and for debugging.
  enable(root, 'serial-getty@.service', 'getty.target', '/lib/systemd/system', 'serial-getty@ttyS0.service');
}
