import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { writeFileDurable } from '../fsio.js';
import { indexHtml, releaseHtml } from '../report/html.js';
import { releaseReport, storeIndex } from '../report/data.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const reportCommand: Command = {
  name: 'report',
  summary: 'A release (or the whole store) as a self-contained web page: artifacts, where published, signatures, ancestry, channels, package changes, audit, provenance, step times, the SBOM',
  usage: `kiln report <name@version> [--out FILE] | kiln report --store [--out DIR]  ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...storeOptions,
      index: { type: 'boolean', description: 'Write the store index (index.html) and a page per release into --out (default kiln-report/); --store names the store as for every store command' },
      out: { type: 'string', short: 'o', description: 'Where to write: the page file for one release (default <name>@<version>.html), the folder for --index', value: 'PATH' },
    });
    if (values.index) {
      if (positionals.length) throw new KilnError('kiln report --index takes no release: it writes a page for every one', { hint: `usage: ${this.usage}`, exitCode: 2 });
      const store = await storeFromFlags(values);
      const s = await storeIndex(store);
      const dir = resolve(values.out ?? 'kiln-report');
      if (existsSync(dir) && !statSync(dir).isDirectory()) throw new KilnError(`--out ${dir} is a file; --index writes a folder`, { exitCode: 2 });
      mkdirSync(dir, { recursive: true });
      writeFileDurable(join(dir, 'index.html'), indexHtml(s));
      for (const l of s.releases) writeFileDurable(join(dir, `${l.name}@${l.version}.html`), releaseHtml(await releaseReport(store, `${l.name}@${l.version}`, s.releases), { linked: true }));
      process.stderr.write(`wrote ${join(dir, 'index.html')} and ${s.releases.length} release page(s)\n`);
      process.stdout.write(`${join(dir, 'index.html')}\n`);
      return 0;
    }
    if (positionals.length !== 1) throw new KilnError('kiln report takes one release (name@version), or --index', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const store = await storeFromFlags(values);
    const r = await releaseReport(store, positionals[0]);
    const file = resolve(values.out ?? `${r.name}@${r.version}.html`);
    mkdirSync(dirname(file), { recursive: true });
    writeFileDurable(file, releaseHtml(r));
    process.stderr.write(`wrote ${file}\n`);
    process.stdout.write(`${file}\n`);
    return 0;
  },
};
