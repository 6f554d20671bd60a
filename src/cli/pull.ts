import { KilnError } from '../errors.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { openStore } from '../store/index.js';
import { parse, type Command } from './command.js';

export const pullCommand: Command = {
  name: 'pull',
  summary: 'Copy a release from a registry (or another store) into the store, verifying every digest',
  usage: 'kiln pull name@version --from oci://host[:port][/prefix]|DIR [--store ...] [--insecure]',
  async run(argv) {
    const { values, positionals } = parse('pull', this.usage, argv, { ...storeOptions, from: { type: 'string' } });
    if (positionals.length !== 1 || !values.from) throw new KilnError('kiln pull needs a release and --from', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const src = await openStore(values.from, process.cwd(), { create: false, insecure: values.insecure });
    const dst = await storeFromFlags(values, { create: true });
    const r = await src.copyTo(dst, positionals[0]);
    process.stderr.write(`pulled ${r.name}@${r.version} ${r.digest} into ${dst.location}\n`);
    return 0;
  },
};
