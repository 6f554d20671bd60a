import { KilnError } from '../errors.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';
import { table } from './releases.js';

export const channelCommand: Command = {
  name: 'channel',
  summary: 'Named, movable pointers to releases (web@production); every move is logged',
  usage: `kiln channel set <channel> name@version [--force] [--allow-rollback] [--sign-key FILE] | kiln channel get name@channel [--log] [--json] | kiln channel list [name] [--json]  ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...storeOptions, force: { type: 'boolean', description: 'set: point the channel at a revoked release anyway' }, 'allow-rollback': { type: 'boolean', description: 'set: move the channel to an older version (recorded in its signed log)' }, json: { type: 'boolean', description: 'Print the result as JSON on stdout' }, log: { type: 'boolean', description: 'get: show every move of the channel' } });
    const [sub, ...args] = positionals;
    const bad = () => new KilnError(`kiln channel ${sub ?? ''}: wrong arguments`, { hint: `usage: ${this.usage}`, exitCode: 2 });
    if (sub === 'set') {
      if (args.length !== 2) throw bad();
      const store = await storeFromFlags(values);
      const s = await store.channelSet(args[0], args[1], { force: values.force, allowRollback: values['allow-rollback'] });
      const move = s.log[s.log.length - 1];
      const mv = await store.metadata(s.name);
      process.stderr.write(`${s.name}@${s.channel} -> ${s.version} (${s.digest})${move.previous ? `, was ${move.previous.version}` : ''}${move.allowRollback ? ' (rollback)' : ''}; metadata seq ${mv.meta?.seq}, ${mv.signature ? `signed by ${mv.signature.signer}` : 'UNSIGNED'}\n`);
      return 0;
    }
    if (sub === 'get') {
      if (args.length !== 1 || !args[0].includes('@')) throw bad();
      const [name, channel] = args[0].split('@');
      const store = await storeFromFlags(values);
      const mv = await store.metadata(name);
      if (mv.problems.length) throw new KilnError(`refusing channel ${args[0]}: ${mv.problems.join('; ')}`, { hint: 'run kiln verify for details' });
      const s = await store.channelGet(name, channel);
      if (!s) throw new KilnError(`no channel ${args[0]} in ${store.location}`, { hint: `kiln channel list ${name}` });
      if (values.json) process.stdout.write(JSON.stringify(s, null, 2) + '\n');
      else if (values.log) process.stdout.write(table([['TIME', 'VERSION', 'PREVIOUS', 'BY'], ...s.log.map((m) => [m.time, m.version, m.previous?.version ?? '-', m.by ?? ''])]));
      else process.stdout.write(`${s.version}\n`);
      return 0;
    }
    if (sub === 'list') {
      if (args.length > 1) throw bad();
      const store = await storeFromFlags(values);
      const list = await store.channelList(args[0]);
      if (values.json) process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      else if (list.length) process.stdout.write(table([['CHANNEL', 'VERSION', 'SINCE', 'MOVES'], ...list.map((s) => [`${s.name}@${s.channel}`, s.version, s.log[s.log.length - 1].time, String(s.log.length)])]));
      return 0;
    }
    throw bad();
  },
};
