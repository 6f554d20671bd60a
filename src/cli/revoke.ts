import { KilnError } from '../errors.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const revokeCommand: Command = {
  name: 'revoke',
  summary: 'Mark a release revoked (it is kept; resolve refuses it unless --force)',
  usage: 'kiln revoke name@version --reason "why" [--sign-key FILE] [--store DIR|oci://host/prefix]',
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...storeOptions, reason: { type: 'string', description: 'Why the release must not be used (required; shown to everyone who resolves it)', value: 'TEXT' } });
    if (positionals.length !== 1 || !values.reason) throw new KilnError('kiln revoke needs a release and --reason', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const store = await storeFromFlags(values);
    const rev = await store.revoke(positionals[0], values.reason);
    const mv = await store.metadata(positionals[0].split('@')[0]);
    process.stderr.write(`revoked ${positionals[0]} at ${rev.time}: ${rev.reason} (metadata seq ${mv.meta?.seq}, ${mv.signature ? `signed by ${mv.signature.signer}` : 'UNSIGNED'})\n`);
    process.stderr.write(`copy it where the release is: kiln push ${positionals[0]} --to <store>\n`);
    return 0;
  },
};
