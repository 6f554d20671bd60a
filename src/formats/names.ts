/** Artifact file names: `<name>-<version><suffix>`, the suffix from the format registry. */
import { KilnError } from '../errors.js';
import { formatSpec, type FormatName } from './registry.js';

const SAFE = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/** `<name>-<version><suffix>`, e.g. web-0.1.0.qcow2; GCE's tarball is web-0.1.0.gce.tar.gz. */
export function artifactFileName(name: string, version: string, format: FormatName): string {
  for (const [what, v] of [['image name', name], ['version', version]] as const) {
    if (!SAFE.test(v)) throw new KilnError(`${what} "${v}" cannot be used in a file name`, { hint: 'use letters, digits, ".", "_", "+" and "-"' });
  }
  const file = `${name}-${version}${formatSpec(format)?.suffix ?? `.${format}`}`;
  if (Buffer.byteLength(file) > 100) throw new KilnError(`artifact name ${file} is longer than 100 bytes (the OVA's tar limit)`, { hint: 'use a shorter image name or version' });
  return file;
}
