/**
 * Every seal operation, in the order sealing runs them and `kiln seal --list` shows them.
 * The order also decides which check names a path found by several: the earlier one.
 */
import { KilnError } from '../errors.js';
import { backupFiles } from './ops/backup-files.js';
import { cloudInit } from './ops/cloud-init.js';
import { credentialFilesOp } from './ops/credential-files.js';
import { dhcpLeases } from './ops/dhcp-leases.js';
import { logsOp } from './ops/logs.js';
import { machineId } from './ops/machine-id.js';
import { netHwaddr } from './ops/net-hwaddr.js';
import { packageCache } from './ops/package-cache.js';
import { provisionerArtifacts } from './ops/provisioner-artifacts.js';
import { randomSeed } from './ops/random-seed.js';
import { shellHistory } from './ops/shell-history.js';
import { sshHostkeys } from './ops/ssh-hostkeys.js';
import { sshUserdir } from './ops/ssh-userdir.js';
import { sslSnakeoil } from './ops/ssl-snakeoil.js';
import { tmpFiles } from './ops/tmp-files.js';
import { waagent } from './ops/waagent.js';
import type { SealOperation } from './types.js';

export const sealOperations: readonly SealOperation[] = [
  sshHostkeys,
  sshUserdir,
  sslSnakeoil,
  machineId,
  randomSeed,
  netHwaddr,
  dhcpLeases,
  cloudInit,
  waagent,
  provisionerArtifacts,
  credentialFilesOp,
  shellHistory,
  backupFiles,
  packageCache,
  logsOp,
  tmpFiles,
];

/** The enabled operations; an unknown name in disable is an error naming the valid ones. */
export function enabledOperations(disable: readonly string[] = []): SealOperation[] {
  const names = new Set(sealOperations.map((o) => o.name));
  const unknown = disable.filter((d) => !names.has(d));
  if (unknown.length) {
    throw new KilnError(`unknown seal operation${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`, {
      hint: `valid names: ${[...names].join(', ')} (see \`kiln seal --list\`)`, exitCode: 2,
    });
  }
  return sealOperations.filter((o) => !disable.includes(o.name));
}
