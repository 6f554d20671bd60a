/**
 * A NoCloud seed (cloud-init): an ISO 9660 volume labelled "cidata" holding user-data and
 * meta-data, built from files with xorriso (no mounts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';

export interface SeedSpec {
  user: string; publicKey: string; instanceId: string; hostname: string;
  /** More top-level #cloud-config lines, e.g. `ssh_deletekeys: false`. */
  cloudConfig?: readonly string[];
}

export function userData(s: SeedSpec): string {
  return [
    '#cloud-config',
    'users:',
    `  - name: ${s.user}`,
    '    sudo: "ALL=(ALL) NOPASSWD:ALL"',
    '    shell: /bin/bash',
    '    lock_passwd: true',
    '    ssh_authorized_keys:',
    `      - ${s.publicKey.trim()}`,
    ...(s.cloudConfig ?? []),
    '',
  ].join('\n');
}

export function metaData(s: SeedSpec): string {
  return `instance-id: ${s.instanceId}\nlocal-hostname: ${s.hostname}\n`;
}

export async function writeSeed(dir: string, s: SeedSpec, logger?: Logger): Promise<string> {
  writeFileSync(join(dir, 'user-data'), userData(s));
  writeFileSync(join(dir, 'meta-data'), metaData(s));
  const iso = join(dir, 'seed.iso');
  await exec('xorriso', ['-as', 'mkisofs', '-quiet', '-o', iso, '-volid', 'cidata', '-joliet', '-rock', join(dir, 'user-data'), join(dir, 'meta-data')], { logger });
  return iso;
}
