import { reportError } from '../errors.js';
import { HelpShown, type Command } from './command.js';
import { commands } from './commands.js';

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  if (name === '--version') {
    const { KILN_VERSION } = await import('../version.js');
    process.stdout.write(`kiln ${KILN_VERSION}\n`);
    return 0;
  }
  const cmd = commands.find((c: Command) => c.name === name);
  if (!cmd) {
    process.stderr.write(`kiln: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    // `--help` is answered by the command's own parse (its options and what each does): nothing runs.
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof HelpShown) return 0;
    return reportError(e, (t) => process.stderr.write(t));
  }
}

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'usage: kiln <command> [options]   (kiln <command> --help for its options)',
    '',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
  ].join('\n');
}
