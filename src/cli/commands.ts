import type { Command } from './command.js';
import { buildCommand } from './build.js';
import { schemaCommand } from './schema.js';
import { validateCommand } from './validate.js';

/** Every command, in the order `kiln --help` lists them. */
export const commands: Command[] = [
  buildCommand,
  validateCommand,
  schemaCommand,
];
