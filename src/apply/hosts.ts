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

/*
 * What --host accepts. The user and address become ssh's arguments and words of an Ansible
 * inventory line, so each is held to what it can mean: a login name, a DNS name or IPv4 address,
 * or an IPv6 address in brackets. Nothing may start with "-" (ssh would read an option, e.g.
 * -oProxyCommand=..., which runs a command on this machine) or hold spaces or quotes (another
 * inventory variable).
 */
const USER = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
const IPV6 = /^\[[0-9A-Fa-f:.]+\]$/;

export function parseHost(spec: string, defaults: { port?: number; user?: string } = {}): ApplyHost {
  const shown = /^[\x21-\x7e]+$/.test(spec) ? spec : JSON.stringify(spec);
  const bad = (why: string) => new KilnError(`--host ${shown}: ${why}`, { hint: 'pass --host [user@]address[:port], e.g. admin@web1.example.org:2222 or [fd00::5]:22', exitCode: 2 });
  const m = /^(?:([^@]*)@)?(\[[^\]]*\]|[^:@]*)(?::([^:@]*))?$/.exec(spec);
  if (!m) throw bad('expected [user@]address[:port]');
  const [, user, host, portText] = m;
  if ([user, host].some((x) => x?.startsWith('-'))) throw bad('a user or address may not start with "-" (ssh would read it as an option)');
  if (user !== undefined && !USER.test(user)) throw bad('the user must be a login name (letters, digits, "_", "." and "-")');
  if (!NAME.test(host) && !IPV6.test(host)) throw bad('the address must be a host name, an IPv4 address, or an IPv6 address in brackets');
  if (portText !== undefined && !/^[0-9]{1,5}$/.test(portText)) throw bad(`port ${JSON.stringify(portText)} is not a number`);
  const address = host.replace(/^\[|\]$/g, '');
  const port = portText !== undefined ? Number(portText) : defaults.port ?? 22;
  if (!(Number.isInteger(port) && port > 0 && port < 65536)) throw bad(`port ${port} is out of range`);
  const name = address.includes(':') ? `[${address}]` : address;
  return { name: `${name}:${port}`, id: `${address}_${port}`.replace(/[^A-Za-z0-9._-]/g, '_'), user: user ?? defaults.user ?? 'root', address, port };
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
