/**
 * Fixed VHD for Azure: the raw bytes, zero-padded to a whole MiB, then the 512-byte footer. Kiln
 * writes this itself rather than through qemu-img: one sparse copy, and a footer with no clock or
 * random fields to patch afterwards.
 */
import { open, stat } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { releaseUuid } from './ids.js';
import { copySparse } from './io.js';
import { buildFixedVhdFooter, roundUpToMiB } from './vhd-footer.js';

export interface FixedVhdPlan { rawSize: number; virtualSize: number; footer: Buffer }

export function planFixedVhd(rawSize: number, name: string, version: string, sourceDateEpoch: number): FixedVhdPlan {
  const virtualSize = roundUpToMiB(rawSize);
  return { rawSize, virtualSize, footer: buildFixedVhdFooter({ size: virtualSize, sourceDateEpoch, uniqueId: releaseUuid('vhd-unique-id', name, version) }) };
}

export async function writeFixedVhd(raw: string, dst: string, name: string, version: string, sourceDateEpoch: number, logger?: Logger): Promise<FixedVhdPlan> {
  const plan = planFixedVhd((await stat(raw)).size, name, version, sourceDateEpoch);
  await copySparse(raw, dst, logger);
  const fh = await open(dst, 'r+');
  try {
    await fh.truncate(plan.virtualSize);
    await fh.write(plan.footer, 0, plan.footer.length, plan.virtualSize);
  } finally {
    await fh.close();
  }
  return plan;
}
