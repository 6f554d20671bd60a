/** Hosts for `kiln apply`: from repeated --host user@addr[:port] or an Ansible inventory file. */
import { KilnError } from '../errors.js';

export interface ApplyHost { name: string; user: string; address: string; port: number }

export function parseHost(spec: string, defaults: { port?: number } = {}): ApplyHost {
  const m = /^(?:([^@\s]+)@)?(\[[0-9a-fA-F:]+\]|[^:@\s]+)(?::(\d+))?$/.exec(spec);
  if (!m) throw new KilnError(`--host ${spec}: expected user@address[:port]`, { exitCode: 2 });
  const address = m[2].replace(/^\[|\]$/g, '');
  const port = m[3] ? Number(m[3]) : defaults.port ?? 22;
  return { name: `${address}:${port}`, user: m[1] ?? 'root', address, port };
}

/** An INI inventory line for a host, with the connection settings Kiln controls. */
export function inventoryLine(h: ApplyHost, keyFile?: string): string {
  const parts = [
    JSON.stringify(h.name).slice(1, -1).replace(/[ ]/g, '_'),
    `ansible_host=${h.address}`, `ansible_port=${h.port}`, `ansible_user=${h.user}`, 'ansible_become=true',
    'ansible_python_interpreter=/usr/bin/python3',
  ];
  if (keyFile) parts.push(`ansible_ssh_private_key_file=${keyFile}`);
  return parts.join(' ');
}
