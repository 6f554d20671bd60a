import { glob, homes, remove, under } from '../tree.js';
import type { TreeEntry } from '../types.js';
import type { Finding } from '../../audit/finding.js';
import type { SealOperation } from '../types.js';

/**
 * What provisioning leaves behind: Ansible's remote tmp and caches, the literal "~user" directories
 * Packer-style runs create, retry files, whatever Kiln staged, and the policy-rc.d that kept
 * services from starting in the chroot (left in place, it stops every package upgrade from
 * restarting its service).
 */
const FIXED = ['/usr/sbin/policy-rc.d', '/var/lib/kiln-staging', '/tmp/packer-provisioner-ansible-local'];
const GLOBS = ['/tmp/.kiln-*', '/var/tmp/.kiln-*'];

export function leftovers(root: string, entries: TreeEntry[]): { path: string; why: string }[] {
  const found = new Map<string, string>();
  const add = (p: string, why: string) => { if (!found.has(p)) found.set(p, why); };
  for (const p of [...FIXED, ...GLOBS.flatMap((g) => glob(root, g))]) if (glob(root, p).length) add(p, p.endsWith('policy-rc.d') ? 'policy-rc.d from the build: services would never start or restart on package changes' : 'staged by the build');
  for (const h of homes(root)) {
    for (const p of glob(root, `${h}/.ansible`)) add(p, 'Ansible remote tmp and caches');
    for (const p of glob(root, `${h}/~*`)) add(p, 'literal "~user" directory left by a remote Ansible run');
  }
  for (const e of entries) {
    const name = e.path.slice(e.path.lastIndexOf('/') + 1);
    if (name.startsWith('ansible-tmp-')) add(e.path, 'Ansible remote tmp directory');
    else if (e.kind === 'file' && name.endsWith('.retry')) add(e.path, 'Ansible retry file');
  }
  const paths = [...found.keys()].sort();
  return paths.filter((p) => !paths.some((q) => q !== p && under(p, q))).map((path) => ({ path, why: found.get(path) as string }));
}

export const provisionerArtifacts: SealOperation = {
  name: 'provisioner-artifacts',
  description: 'Remove Ansible tmp dirs and caches, retry files, Kiln staging and policy-rc.d',
  async apply(root, ctx) {
    return leftovers(root, await ctx.entries()).flatMap((l) => remove(root, l.path, ctx));
  },
  async check(root, ctx) {
    return leftovers(root, await ctx.entries()).map((l): Finding => ({ check: this.name, path: l.path, message: l.why }));
  },
};
