import { initRepository } from '../init/index.js';
import { KilnError } from '../errors.js';
import { parse, type Command } from './command.js';

export const initCommand: Command = {
  name: 'init',
  summary: 'Start a new image repository that builds as it is: kiln.yaml, a playbook with one role, .gitignore, README',
  usage: 'kiln init [dir] [--name NAME]',
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      name: { type: 'string', description: 'The image name (default: from the folder name)', value: 'NAME' },
    });
    if (positionals.length > 1) throw new KilnError('kiln init takes at most one folder', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const r = await initRepository(positionals[0] ?? '.', { name: values.name });
    process.stderr.write(`${r.gitInit ? 'initialised a git repository and wrote' : 'wrote'} image ${r.name} in ${r.dir}:\n${r.files.map((f) => `  ${f}`).join('\n')}\nnext: git add -A && git commit -m init && git tag release-0.1.0 && kiln build\n`);
    return 0;
  },
};
