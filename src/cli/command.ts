import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KilnError } from '../errors.js';

/** A CLI command: parsing and printing only; the work lives in the modules it calls. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with Kiln's error style: an unknown flag names the command's usage. */
export function parse<O extends Options>(cmd: string, usage: string, argv: string[], options: O, allowPositionals = true) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new KilnError(`kiln ${cmd}: ${(e as Error).message}`, { hint: `usage: ${usage}`, exitCode: 2 });
  }
}

/** Splits `kiln cmd [options] -- command ...` into the command's own arguments and the one to run (if any). */
export function splitAtDashes(argv: string[]): { own: string[]; command?: string[] } {
  const dash = argv.indexOf('--');
  return dash >= 0 ? { own: argv.slice(0, dash), command: argv.slice(dash + 1) } : { own: argv };
}
