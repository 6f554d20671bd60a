import type { Command } from './command.js';
import { schemaCommand } from './schema.js';
import { validateCommand } from './validate.js';
import { releasesCommand } from './releases.js';
import { resolveCommand } from './resolve.js';
import { verifyCommand } from './verify.js';
import { revokeCommand } from './revoke.js';
import { channelCommand } from './channel.js';
import { pushCommand } from './push.js';
import { pullCommand } from './pull.js';

/** Every command, in the order `kiln --help` lists them. */
export const commands: Command[] = [
  validateCommand,
  schemaCommand,
  releasesCommand,
  resolveCommand,
  verifyCommand,
  revokeCommand,
  channelCommand,
  pushCommand,
  pullCommand,
];
