import { existsSync } from 'node:fs';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';

/** Ends the SSH master connection whose socket is at path (it would otherwise linger for ControlPersist); nothing when there is none. */
export async function endSshMaster(path: string, logger?: Logger): Promise<void> {
  if (existsSync(path)) await exec('ssh', ['-o', `ControlPath=${path}`, '-O', 'exit', 'kiln-master'], { allowFailure: true, logger });
}

/** ssh options for throwaway test VMs: a per-boot key, no host key persistence. */
export function sshArgs(keyFile: string, port: number, user: string, host = '127.0.0.1'): string[] {
  return [
    '-i', keyFile, '-p', String(port),
    '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes',
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', '-o', 'ServerAliveInterval=15',
    `${user}@${host}`,
  ];
}

export async function waitForSsh(vm: { ssh(c: string, o?: { allowFailure?: boolean }): Promise<{ code: number | null }> }, o: { timeoutSec: number; isAlive: () => boolean; /** Why waiting is pointless (a kernel panic on the console), checked every round. */ failed?: () => string | undefined; logger: Logger }): Promise<void> {
  const end = Date.now() + o.timeoutSec * 1000;
  while (Date.now() < end) {
    if (!o.isAlive()) throw new KilnError('the VM stopped before SSH came up', { hint: 'see the serial console output below' });
    const failed = o.failed?.();
    if (failed) throw new KilnError(failed, { hint: 'see the serial console output below' });
    const r = await vm.ssh('true', { allowFailure: true });
    if (r.code === 0) return;
    await new Promise((r2) => setTimeout(r2, 2000));
  }
  throw new KilnError(`SSH did not come up within ${o.timeoutSec}s`, { hint: 'see the serial console output below' });
}
