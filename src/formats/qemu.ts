/** qemu-img, the converter behind qcow2, VMDK and VHDX. Never `-W`: out-of-order writes make output nondeterministic. */
import { exec, output } from '../exec.js';
import type { Logger } from '../log.js';

export async function qemuConvert(raw: string, dst: string, format: string, options: string[], extra: string[] = [], logger?: Logger): Promise<void> {
  const o = options.length ? ['-o', options.join(',')] : [];
  await exec('qemu-img', ['convert', '-f', 'raw', '-O', format, ...o, ...extra, raw, dst], {
    logger, hint: 'qemu-img comes from the qemu-utils package (`kiln doctor`)',
  });
}

/** Bytes of the image that hold data, from `qemu-img map` (content-defined: zero clusters are not data). */
export async function populatedBytes(file: string, format: string, logger?: Logger): Promise<number> {
  const map = JSON.parse(await output('qemu-img', ['map', '-f', format, '--output=json', file], { logger })) as { length: number; data: boolean }[];
  return map.filter((e) => e.data).reduce((n, e) => n + e.length, 0);
}
