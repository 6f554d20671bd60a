import { resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { ProvisionSandbox } from '../provision/chroot.js';
import { parse, splitAtDashes, type Command } from './command.js';

export const shellCommand: Command = {
  name: 'shell',
  summary: 'Open a shell in the image tree of a build kept by --on-error=keep, in the same build sandbox the playbook had',
  usage: 'kiln shell <work dir> [--verbose] [-- command ...]',
  async run(argv) {
    const { own, command } = splitAtDashes(argv);
    const { values, positionals } = parse(this, own, { verbose: { type: 'boolean', short: 'v', description: 'Show the commands run' } }, true);
    if (positionals.length !== 1) throw new KilnError('kiln shell needs the work directory that `kiln build --on-error=keep` printed', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const box = await ProvisionSandbox.reopen(resolve(positionals[0]), createLogger({ verbose: values.verbose }));
    try {
      return await box.shell(command);
    } finally {
      await box.stop();
    }
  },
};
