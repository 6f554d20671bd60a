/** VHDX (Hyper-V), converted by qemu-img; its random GUIDs and sequence numbers are then made deterministic. */
import { openSync, closeSync, readSync } from 'node:fs';
import type { Logger } from '../log.js';
import { writeAt } from './io.js';
import { qemuConvert } from './qemu.js';
import { planVhdxPatches } from './vhdx-ids.js';

export async function writeVhdx(raw: string, dst: string, name: string, version: string, logger?: Logger): Promise<void> {
  await qemuConvert(raw, dst, 'vhdx', ['subformat=dynamic'], [], logger);
  const fd = openSync(dst, 'r');
  let patches;
  try {
    patches = planVhdxPatches((offset, length) => {
      const b = Buffer.alloc(length);
      return b.subarray(0, readSync(fd, b, 0, length, offset));
    }, name, version);
  } finally {
    closeSync(fd);
  }
  await writeAt(dst, patches);
}
