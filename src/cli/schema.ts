import { kilnSchema } from '../template/schema.js';
import { parse, type Command } from './command.js';

export const schemaCommand: Command = {
  name: 'schema',
  summary: 'Print the JSON Schema of kiln.yaml (for editors)',
  usage: 'kiln schema',
  async run(argv) {
    parse(this, argv, {}, false);
    process.stdout.write(JSON.stringify(kilnSchema, null, 2) + '\n');
    return 0;
  },
};
