import { dropLines, glob, isFile, readText, remove } from '../tree.js';
import type { Finding } from '../../audit/finding.js';
import type { SealOperation } from '../types.js';

/**
 * Configuration bound to one NIC's MAC address: a clone has another MAC, so the binding either
 * matches nothing (no network) or renames the wrong device. Lines are dropped from files that
 * configure more than the binding; files that exist only to bind a MAC (.link files matching a
 * MAC, udev persistent-net rules) are removed.
 */
interface Flavour {
  /** Image-path glob patterns. */
  files: string[];
  /** A line binding the configuration to a MAC. */
  line: RegExp;
  /** Remove the whole file instead of the lines. */
  wholeFile?: boolean;
  what: string;
}

const MAC_KEY = /^\s*(PermanentMACAddress|MACAddress)\s*=\s*\S/;

const flavours: Flavour[] = [
  { what: 'ifupdown', files: ['/etc/network/interfaces', '/etc/network/interfaces.d/*'], line: /^\s*hwaddress\s+\S/ },
  { what: 'ifcfg', files: ['/etc/sysconfig/network-scripts/ifcfg-*', '/etc/sysconfig/network/ifcfg-*'], line: /^\s*(HWADDR|MACADDR)\s*=\s*\S/ },
  { what: 'NetworkManager', files: ['/etc/NetworkManager/system-connections/*'], line: /^\s*(mac-address|cloned-mac-address)\s*=\s*\S/ },
  { what: 'netplan', files: ['/etc/netplan/*.yaml', '/etc/netplan/*.yml'], line: /^\s*macaddress\s*:\s*\S/ },
  { what: 'systemd-networkd', files: ['/etc/systemd/network/*.network'], line: MAC_KEY },
  { what: 'systemd .link', files: ['/etc/systemd/network/*.link'], line: MAC_KEY, wholeFile: true },
  { what: 'udev persistent-net', files: ['/etc/udev/rules.d/*persistent-net*.rules'], line: /^\s*[^#\s]/, wholeFile: true },
];

function bound(root: string): { path: string; flavour: Flavour; line: string }[] {
  const out: { path: string; flavour: Flavour; line: string }[] = [];
  for (const flavour of flavours) {
    const paths = [...new Set(flavour.files.flatMap((f) => glob(root, f)))].sort();
    for (const p of paths) {
      if (!isFile(root, p)) continue;
      const line = readText(root, p).split('\n').find((l) => flavour.line.test(l));
      if (line !== undefined) out.push({ path: p, flavour, line: line.trim() });
    }
  }
  return out;
}

export const netHwaddr: SealOperation = {
  name: 'net-hwaddr',
  description: 'Remove MAC address bindings from network configuration and udev persistent-net rules',
  async apply(root, ctx) {
    return bound(root).flatMap(({ path, flavour }) => (flavour.wholeFile ? remove(root, path, ctx) : dropLines(root, path, ctx, (l) => flavour.line.test(l))));
  },
  async check(root) {
    return bound(root).map(({ path, flavour, line }): Finding => ({ check: this.name, path, message: `${flavour.what} configuration bound to a MAC address (${line}): a clone's NIC will not match` }));
  },
};

