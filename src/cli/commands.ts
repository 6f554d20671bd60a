import { auditCommand } from './audit.js';
import type { Command } from './command.js';
import { schemaCommand } from './schema.js';
import { sealCommand } from './seal.js';
import { validateCommand } from './validate.js';

/** Every command, in the order `kiln --help` lists them. */
export const commands: Command[] = [
  validateCommand,
  schemaCommand,
  sealCommand,
  auditCommand,
];
