import { KilnError } from '../errors.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { signedByLine } from '../store/policy.js';
import type { MetadataCopy } from '../store/release-store.js';
import { parse, type Command } from './command.js';

/** What happened to the image's signed metadata in a copy, for push and pull's last line. */
export function metadataLine(m: MetadataCopy): string {
  switch (m.action) {
    case 'none': return 'the image has no signed metadata';
    case 'same': return `metadata seq ${m.seq} already there`;
    case 'copied': return `metadata seq ${m.seq} copied (revocations, channels, cloud ids)`;
    case 'kept-newer': return `the destination's metadata is newer (seq ${m.seq}); kept`;
  }
}

export const pullCommand: Command = {
  name: 'pull',
  summary: 'Copy a release from a registry (or another store) into the store, verifying every digest, signature and the signed metadata',
  usage: `kiln pull name@version --from oci://host[:port][/prefix]|DIR ${STORE_USAGE} [--insecure]`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...storeOptions, from: { type: 'string', description: 'The store to copy the release from: an OCI registry or a directory', value: 'oci://host[:port][/prefix]|DIR' } });
    if (positionals.length !== 1 || !values.from) throw new KilnError('kiln pull needs a release and --from', { hint: `usage: ${this.usage}`, exitCode: 2 });
    // The source is read under this reader's policy (kiln.yaml, the user's trust file, the flags).
    const src = await storeFromFlags({ ...values, store: values.from });
    const dst = await storeFromFlags(values, { create: true });
    const r = await src.copyTo(dst, positionals[0]);
    process.stderr.write(`${r.copied ? 'pulled' : 'already had'} ${r.name}@${r.version} ${r.digest} ${r.copied ? 'into ' : 'in '}${dst.location}, ${signedByLine(r.signers, src.trust)}; ${metadataLine(r.metadata)}\n`);
    if (r.revoked) process.stderr.write(`warning: ${r.name}@${r.version} is revoked: ${r.revoked.reason}\n`);
    return 0;
  },
};
