import { writeFileSync } from 'node:fs';
import { hostPath, statInTree } from '../../image/tree.js';
import { isFile, readText, remove, truncate } from '../tree.js';
import type { Finding } from '../../audit/finding.js';
import type { SealOperation } from '../types.js';

/**
 * An empty /etc/machine-id makes systemd generate a fresh ID on each clone's first boot and
 * commit it. Empty rather than "uninitialized": the latter also re-applies unit presets
 * (ConditionFirstBoot), which could undo what the playbook enabled. D-Bus falls back to
 * /etc/machine-id when its own copy is absent.
 */
const ETC = '/etc/machine-id';
const DBUS = '/var/lib/dbus/machine-id';

export const machineId: SealOperation = {
  name: 'machine-id',
  description: 'Empty /etc/machine-id and remove the D-Bus copy; systemd generates a new ID on first boot',
  async apply(root, ctx) {
    const changed: string[] = [];
    if (!statInTree(root, ETC) && !ctx.keep.has(ETC)) {
      writeFileSync(hostPath(root, ETC), '', { mode: 0o444 });
      changed.push(ETC);
    } else {
      changed.push(...truncate(root, ETC, ctx));
    }
    if (statInTree(root, DBUS)?.isFile()) changed.push(...remove(root, DBUS, ctx));
    return changed;
  },
  async check(root) {
    const found: Finding[] = [];
    if (!statInTree(root, ETC)) found.push({ check: this.name, path: ETC, message: 'missing: expected an empty file so systemd generates a machine ID on first boot' });
    else if (isFile(root, ETC) && readText(root, ETC).trim() !== '') found.push({ check: this.name, path: ETC, message: 'holds a machine ID: every clone would share it' });
    const dbus = statInTree(root, DBUS);
    if (dbus?.isFile() && dbus.size > 0) found.push({ check: this.name, path: DBUS, message: 'holds a D-Bus machine ID: every clone would share it' });
    return found;
  },
};
