import { KilnError } from '../errors.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const revokeCommand: Command = {
  name: 'revoke',
  summary: 'Mark a release revoked (it is kept; resolve refuses it unless --force)',
  usage: 'kiln revoke name@version --reason "why" [--store DIR|oci://host/prefix]',
  async run(argv) {
    const { values, positionals } = parse('revoke', this.usage, argv, { ...storeOptions, reason: { type: 'string' } });
    if (positionals.length !== 1 || !values.reason) throw new KilnError('kiln revoke needs a release and --reason', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const store = await storeFromFlags(values);
    const rev = await store.revoke(positionals[0], values.reason);
    process.stderr.write(`revoked ${positionals[0]} at ${rev.time}: ${rev.reason}\n`);
    return 0;
  },
};
