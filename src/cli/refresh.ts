import { KilnError } from '../errors.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const refreshCommand: Command = {
  name: 'refresh',
  summary: "Sign an image's metadata (channels, revocations, cloud ids) again with a new expiry; creates it for older stores",
  usage: `kiln refresh <name> [--sign-key FILE] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...storeOptions });
    if (positionals.length !== 1) throw new KilnError('kiln refresh takes one image name', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const store = await storeFromFlags(values);
    const m = await store.refresh(positionals[0]);
    const mv = await store.metadata(positionals[0]);
    process.stderr.write(`${m.name}: metadata seq ${m.seq}, ${Object.keys(m.releases).length} release(s), ${Object.keys(m.channels).length} channel(s), ${Object.keys(m.revoked).length} revoked; signed by ${mv.signature?.signer ?? '?'}; expires ${m.expires ?? 'never'}\n`);
    return 0;
  },
};
