import { KilnError } from '../errors.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { openStore } from '../store/index.js';
import { metadataLine } from './pull.js';
import { parse, type Command } from './command.js';

export const pushCommand: Command = {
  name: 'push',
  summary: 'Copy a release (with signatures and revocations) from the store to a registry or another store',
  usage: 'kiln push name@version --to oci://host[:port][/prefix]|DIR [--store ...] [--insecure]',
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...storeOptions, to: { type: 'string', description: 'The store to copy the release to: an OCI registry or a directory', value: 'oci://host[:port][/prefix]|DIR' } });
    if (positionals.length !== 1 || !values.to) throw new KilnError('kiln push needs a release and --to', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const src = await storeFromFlags(values);
    const dst = await openStore(values.to, process.cwd(), { create: true, insecure: values.insecure });
    const r = await src.copyTo(dst, positionals[0]);
    process.stderr.write(`${r.copied ? 'pushed' : 'already in'} ${r.name}@${r.version} ${r.digest} ${r.copied ? 'to' : ''}${dst.location}; ${metadataLine(r.metadata)}\n`);
    return 0;
  },
};
