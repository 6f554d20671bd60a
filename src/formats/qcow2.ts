/** qcow2 for KVM, OpenStack and Proxmox: compat 1.1 and zlib, which every QEMU since 1.1 reads (zstd needs 5.1+). */
import type { Logger } from '../log.js';
import { qemuConvert } from './qemu.js';

export async function writeQcow2(raw: string, dst: string, compress: boolean, logger?: Logger): Promise<void> {
  await qemuConvert(raw, dst, 'qcow2', ['compat=1.1', 'compression_type=zlib'], compress ? ['-c'] : [], logger);
}
