import { parseArgs } from 'node:util';
import { KilnError } from '../errors.js';

/** A CLI command: parsing and printing only; the work lives in the modules it calls. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

/**
 * One option of a command, as parseArgs takes it plus what `--help` shows: every option says what it
 * does (the type requires it), and `value` names a string option's argument (FILE, N, ...).
 */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  default?: string | boolean;
  description: string;
  value?: string;
}
export type OptionSpecs = Record<string, OptionSpec>;

/** Thrown by parse once it has printed a command's help: the CLI exits 0. */
export class HelpShown extends Error {
  constructor() {
    super('help shown');
    this.name = 'HelpShown';
  }
}

/** `kiln <cmd> --help`: the usage, what the command does, and each option with its description. */
export function helpText(cmd: Pick<Command, 'usage' | 'summary'>, options: OptionSpecs): string {
  const rows = Object.entries(options).sort(([a], [b]) => a.localeCompare(b)).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
    const extra = [o.multiple ? 'repeatable' : '', o.default !== undefined ? `default: ${String(o.default)}` : ''].filter(Boolean).join('; ');
    return [flag, `${o.description}${extra ? ` (${extra})` : ''}`];
  });
  rows.push(['-h, --help', 'show this help']);
  const width = Math.min(34, Math.max(...rows.map(([f]) => f.length)));
  const lines = [`usage: ${cmd.usage}`, '', cmd.summary, '', 'options:', ...rows.map(([f, d]) => (f.length > width ? `  ${f}\n  ${''.padEnd(width)}  ${d}` : `  ${f.padEnd(width)}  ${d}`)), ''];
  return lines.join('\n');
}

/**
 * parseArgs with Kiln's error style: an unknown flag names the command's usage. `--help` (or `-h`)
 * anywhere in argv prints the command's help and throws HelpShown: nothing else runs.
 */
export function parse<O extends OptionSpecs>(cmd: Pick<Command, 'name' | 'usage' | 'summary'>, argv: string[], options: O, allowPositionals = true) {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(helpText(cmd, options));
    throw new HelpShown();
  }
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new KilnError(`kiln ${cmd.name}: ${(e as Error).message}`, { hint: `usage: ${cmd.usage}`, exitCode: 2 });
  }
}

/** Splits `kiln cmd [options] -- command ...` into the command's own arguments and the one to run (if any). */
export function splitAtDashes(argv: string[]): { own: string[]; command?: string[] } {
  const dash = argv.indexOf('--');
  return dash >= 0 ? { own: argv.slice(0, dash), command: argv.slice(dash + 1) } : { own: argv };
}
