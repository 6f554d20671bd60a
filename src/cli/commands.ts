import type { Command } from './command.js';
import { bootCommand } from './boot.js';
import { buildCommand } from './build.js';
import { doctorCommand } from './doctor.js';
import { schemaCommand } from './schema.js';
import { validateCommand } from './validate.js';

/** Every command, in the order `kiln --help` lists them. */
export const commands: Command[] = [
  buildCommand,
  bootCommand,
  validateCommand,
  schemaCommand,
  doctorCommand,
];
