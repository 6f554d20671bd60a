import { KilnError } from '../errors.js';
import { storeFromFlags, type StoreFlags } from './from-cli.js';
import { signedByLine } from './policy.js';

const BOOTABLE: Record<string, string> = { qcow2: 'qcow2', raw: 'raw', vmdk: 'vmdk', vhd: 'vpc', vhdx: 'vhdx' };

/** Resolves name@version to a local disk for `kiln boot`: the release's qcow2, else raw, else another disk format. */
export async function resolveForBoot(ref: string, flags: StoreFlags, format?: string): Promise<{ path: string; format: string; signedBy: string }> {
  const s = await storeFromFlags(flags);
  const r = await s.resolve(ref);
  const wanted = format ? [format] : ['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx'];
  const a = wanted.map((f) => r.artifacts.find((x) => x.format === f)).find(Boolean);
  if (!a || !BOOTABLE[a.format]) throw new KilnError(`${ref} has no bootable disk artifact${format ? ` in format ${format}` : ''}`, { hint: `formats in the release: ${r.artifacts.map((x) => x.format).join(', ')}` });
  if (/^[a-z]+:\/\//.test(a.location) || !a.location.startsWith('/')) {
    throw new KilnError(`${ref} is in a remote store: pull it first`, { hint: `kiln pull ${ref} --from <store>` });
  }
  return { path: a.location, format: BOOTABLE[a.format], signedBy: signedByLine(r.signers, s.trust) };
}
