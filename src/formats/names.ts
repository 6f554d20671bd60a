/** Artifact file names and media types, one table for every format. */
import { KilnError } from '../errors.js';
import type { FormatName } from '../template/schema.js';

export const FORMAT_SUFFIX: Record<FormatName, string> = {
  raw: '.raw', qcow2: '.qcow2', vmdk: '.vmdk', vhd: '.vhd', vhdx: '.vhdx', ova: '.ova', gce: '.gce.tar.gz',
};

/** shared-mime-info (freedesktop.org) types, which file managers and registries already know. */
export const FORMAT_MEDIA_TYPE: Record<FormatName, string> = {
  raw: 'application/x-raw-disk-image',
  qcow2: 'application/x-qemu-disk',
  vmdk: 'application/x-vmdk-disk',
  vhd: 'application/x-vhd-disk',
  vhdx: 'application/x-vhdx-disk',
  ova: 'application/x-virtualbox-ova',
  gce: 'application/x-compressed-tar',
};

const SAFE = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/** `<name>-<version><suffix>`, e.g. web-0.1.0.qcow2; GCE's tarball is web-0.1.0.gce.tar.gz. */
export function artifactFileName(name: string, version: string, format: FormatName): string {
  for (const [what, v] of [['image name', name], ['version', version]] as const) {
    if (!SAFE.test(v)) throw new KilnError(`${what} "${v}" cannot be used in a file name`, { hint: 'use letters, digits, ".", "_", "+" and "-"' });
  }
  const file = `${name}-${version}${FORMAT_SUFFIX[format]}`;
  if (Buffer.byteLength(file) > 100) throw new KilnError(`artifact name ${file} is longer than 100 bytes (the OVA's tar limit)`, { hint: 'use a shorter image name or version' });
  return file;
}
