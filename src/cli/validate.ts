import { createLogger } from '../log.js';
import { findTemplate, loadTemplate } from '../template/load.js';
import { parse, type Command } from './command.js';

export const validateCommand: Command = {
  name: 'validate',
  summary: 'Check kiln.yaml (and that the files it names exist) without building',
  usage: 'kiln validate [--file kiln.yaml] [--syntax-only]',
  async run(argv) {
    const { values } = parse(this, argv, { file: { type: 'string', short: 'f', description: 'The kiln.yaml to check (default: found from the current directory up)', value: 'kiln.yaml' }, 'syntax-only': { type: 'boolean', description: 'Only kiln.yaml itself: skip the Ansible syntax check of the playbook' } });
    const t = loadTemplate(findTemplate(values.file ?? '.'));
    if (!values['syntax-only']) {
      const { syntaxCheck } = await import('../provision/ansible.js');
      await syntaxCheck(t, createLogger({}));
    }
    process.stderr.write(`${t.file}: ok (${t.config.name}, formats: ${t.config.formats.join(', ')})\n`);
    return 0;
  },
};
