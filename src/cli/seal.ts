import { existsSync } from 'node:fs';
import { KilnError } from '../errors.js';
import { sealOperations } from '../seal/operations.js';
import { findTemplate, loadTemplate } from '../template/load.js';
import { parse, type Command } from './command.js';

export const sealCommand: Command = {
  name: 'seal',
  summary: 'List the seal operations (and which kiln.yaml disables)',
  usage: 'kiln seal --list [--file kiln.yaml] [--json]',
  async run(argv) {
    const { values } = parse(this, argv, { list: { type: 'boolean', description: 'List the seal operations' }, file: { type: 'string', short: 'f', description: 'Mark the operations this kiln.yaml\'s seal.disable turns off', value: 'kiln.yaml' }, json: { type: 'boolean', description: 'Print the list as JSON on stdout' } }, false);
    if (!values.list) throw new KilnError('kiln seal: nothing to do', { hint: `usage: ${this.usage} (the build seals; \`kiln audit\` checks an image)`, exitCode: 2 });
    const file = values.file ? findTemplate(values.file) : existsSync('kiln.yaml') ? 'kiln.yaml' : undefined;
    const seal = file ? loadTemplate(file).config.seal : undefined;
    const unknown = (seal?.disable ?? []).filter((d) => !sealOperations.some((o) => o.name === d));
    if (unknown.length) throw new KilnError(`${file}: seal.disable names unknown operations: ${unknown.join(', ')}`, { exitCode: 2 });
    const rows = sealOperations.map((o) => ({ name: o.name, enabled: !seal?.disable.includes(o.name), description: o.description }));
    if (values.json) {
      process.stdout.write(JSON.stringify({ template: file ?? null, operations: rows, keep: seal?.keep ?? [] }, null, 2) + '\n');
      return 0;
    }
    const w = Math.max(...rows.map((r) => r.name.length));
    for (const r of rows) process.stdout.write(`${r.name.padEnd(w)}  ${file ? (r.enabled ? 'on ' : 'off') + '  ' : ''}${r.description}\n`);
    if (file && seal?.keep.length) process.stdout.write(`\nkept (seal.keep): ${seal.keep.join(', ')}\n`);
    return 0;
  },
};
