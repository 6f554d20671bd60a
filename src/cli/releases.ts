import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

export const releasesCommand: Command = {
  name: 'releases',
  summary: 'List releases in the store: version, date, commit, formats, signer, status',
  usage: `kiln releases [name] [--json] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse('releases', this.usage, argv, { ...storeOptions, json: { type: 'boolean' } });
    const store = await storeFromFlags(values);
    const list = await store.list(positionals[0]);
    if (values.json) {
      process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      return 0;
    }
    if (!list.length) {
      process.stderr.write(`no releases${positionals[0] ? ` of ${positionals[0]}` : ''} in ${store.location}\n`);
      return 0;
    }
    const rows = [['NAME', 'VERSION', 'DATE', 'COMMIT', 'FORMATS', 'SOURCE', 'SIGNER', 'STATUS']];
    for (const r of list) rows.push([r.name, r.version, r.date, r.commit.slice(0, 12), r.formats.join(','), r.sourceVerified ? 'verified' : 'UNVERIFIED', r.signer, r.status + (r.reason ? `: ${r.reason}` : '')]);
    process.stdout.write(table(rows));
    return 0;
  },
};
