/**
 * streamOptimized VMDK, the only VMDK VMware, AWS and OVAs take. qemu-img writes a random CID and
 * the output file name into the descriptor, so Kiln converts straight to the final file name and
 * replaces the CID with one derived from the release.
 */
import type { Logger } from '../log.js';
import { vmdkCid } from './ids.js';
import { readAt, writeAt } from './io.js';
import { qemuConvert } from './qemu.js';
import { parseVmdkHeader, SECTOR, setDescriptorCid } from './vmdk-descriptor.js';

export async function writeStreamOptimizedVmdk(raw: string, dst: string, name: string, version: string, logger?: Logger): Promise<void> {
  await qemuConvert(raw, dst, 'vmdk', ['subformat=streamOptimized', 'adapter_type=lsilogic'], [], logger);
  await patchVmdkCid(dst, vmdkCid(name, version));
}

export async function patchVmdkCid(file: string, cid: string): Promise<void> {
  const header = parseVmdkHeader(await readAt(file, 0, SECTOR));
  const offset = header.descriptorOffsetSectors * SECTOR;
  const descriptor = await readAt(file, offset, header.descriptorSizeSectors * SECTOR);
  await writeAt(file, [{ offset, data: setDescriptorCid(descriptor, cid) }]);
}
