/**
 * First-boot units: what sealing removed that a machine needs (host keys, snakeoil certificate)
 * is regenerated on each clone's first boot, so every VM from one image is distinct.
 * Enabled the way `systemctl enable` does it, with symlinks, since no systemd runs at build time.
 */
import { isFile, symlinkOwned, writeOwned } from './tree.js';
import type { SealContext } from './types.js';
import { statInTree } from '../image/tree.js';

export interface FirstbootUnit {
  /** Unit file name, e.g. kiln-firstboot-ssh-keys.service. */
  name: string;
  description: string;
  /** Skip when this file exists (the unit already did its work). */
  unlessExists: string;
  /** Started before these units (which may not exist; that is harmless). */
  before: string[];
  /** Units that pull this one in (symlinks in <unit>.wants/). */
  wantedBy: string[];
  exec: string;
}

const UNIT_DIR = '/etc/systemd/system';

export function unitText(u: FirstbootUnit): string {
  return [
    '# Installed by kiln seal: regenerates per-machine state on the first boot of each clone.',
    '[Unit]',
    `Description=${u.description}`,
    `ConditionPathExists=!${u.unlessExists}`,
    `Before=${u.before.join(' ')}`,
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=${u.exec}`,
    '',
    '[Install]',
    `WantedBy=${u.wantedBy.join(' ')}`,
    '',
  ].join('\n');
}

export function installFirstboot(root: string, u: FirstbootUnit, ctx: SealContext): string[] {
  const file = `${UNIT_DIR}/${u.name}`;
  return [
    ...writeOwned(root, file, unitText(u), ctx),
    ...u.wantedBy.flatMap((w) => symlinkOwned(root, `${UNIT_DIR}/${w}.wants/${u.name}`, file, ctx)),
  ];
}

/** Why the unit would not run on first boot, or undefined when it is installed and enabled. */
export function firstbootProblem(root: string, u: FirstbootUnit): string | undefined {
  const file = `${UNIT_DIR}/${u.name}`;
  if (!isFile(root, file)) return `${file} is missing`;
  const missing = u.wantedBy.filter((w) => !statInTree(root, `${UNIT_DIR}/${w}.wants/${u.name}`)?.isSymbolicLink());
  if (missing.length) return `${u.name} is not enabled for ${missing.join(', ')}`;
  return undefined;
}
