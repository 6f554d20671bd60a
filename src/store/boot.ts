import { KilnError } from '../errors.js';
import { BOOT_ORDER } from '../formats/registry.js';
import { storeFromFlags, type StoreFlags } from './from-cli.js';
import { signedByLine } from './policy.js';


/** Resolves name@version to a local disk for `kiln boot`: the release's qcow2, else raw, else another disk format. */
export async function resolveForBoot(ref: string, flags: StoreFlags, format?: string): Promise<{ path: string; format: string; signedBy: string }> {
  const s = await storeFromFlags(flags);
  const r = await s.resolve(ref);
  const wanted = format ? BOOT_ORDER.filter((f) => f.name === format) : BOOT_ORDER;
  const found = wanted.map((f) => ({ spec: f, a: r.artifacts.find((x) => x.format === f.name) })).find((x) => x.a);
  const a = found?.a;
  if (!found || !a || !found.spec.qemuImg) throw new KilnError(`${ref} has no bootable disk artifact${format ? ` in format ${format}` : ''}`, { hint: `formats in the release: ${r.artifacts.map((x) => x.format).join(', ')}` });
  if (/^[a-z]+:\/\//.test(a.location) || !a.location.startsWith('/')) {
    throw new KilnError(`${ref} is in a remote store: pull it first`, { hint: `kiln pull ${ref} --from <store>` });
  }
  return { path: a.location, format: found.spec.qemuImg, signedBy: signedByLine(r.signers, s.trust) };
}
