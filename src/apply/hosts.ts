/** Hosts for `kiln apply`: from repeated --host user@addr[:port] or an Ansible inventory file. */
import { KilnError } from '../errors.js';

export interface ApplyHost {
  /** What the user sees: address:port. */
  name: string;
  /** The inventory name: Ansible reads "a:b" in an inventory as host a, port b, so no colons here. */
  id: string;
  user: string;
  address: string;
  port: number;
}

export function parseHost(spec: string, defaults: { port?: number; user?: string } = {}): ApplyHost {
  const m = /^(?:([^@\s]+)@)?(\[[0-9a-fA-F:.]+\]|[^:@\s[\]]+)(?::(\d+))?$/.exec(spec);
  if (!m) throw new KilnError(`--host ${spec}: expected [user@]address[:port]`, { exitCode: 2 });
  const address = m[2].replace(/^\[|\]$/g, '');
  const port = m[3] ? Number(m[3]) : defaults.port ?? 22;
  if (!(port > 0 && port < 65536)) throw new KilnError(`--host ${spec}: port ${port} is out of range`, { exitCode: 2 });
  const shown = address.includes(':') ? `[${address}]` : address;
  return { name: `${shown}:${port}`, id: `${address}_${port}`.replace(/[^A-Za-z0-9._-]/g, '_'), user: m[1] ?? defaults.user ?? 'root', address, port };
}

/** Refuses the same host given twice under the same name (its results could not be told apart). */
export function uniqueHosts(hosts: ApplyHost[]): ApplyHost[] {
  const seen = new Set<string>();
  for (const h of hosts) {
    if (seen.has(h.id)) throw new KilnError(`--host ${h.name} is given twice`, { exitCode: 2 });
    seen.add(h.id);
  }
  return hosts;
}

/** An INI inventory line for a host, with the connection settings Kiln controls. */
export function inventoryLine(h: ApplyHost, keyFile?: string): string {
  const parts = [h.id, `ansible_host=${h.address}`, `ansible_port=${h.port}`, `ansible_user=${h.user}`, 'ansible_python_interpreter=/usr/bin/python3'];
  if (keyFile) parts.push(`ansible_ssh_private_key_file=${JSON.stringify(keyFile)}`);
  return parts.join(' ');
}
