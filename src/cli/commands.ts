import { auditCommand } from './audit.js';
import type { Command } from './command.js';
import { applyCommand } from './apply.js';
import { statusCommand } from './status.js';
import { bootCommand } from './boot.js';
import { buildCommand } from './build.js';
import { cacheCommand } from './cache.js';
import { doctorCommand } from './doctor.js';
import { schemaCommand } from './schema.js';
import { sealCommand } from './seal.js';
import { validateCommand } from './validate.js';
import { releasesCommand } from './releases.js';
import { resolveCommand } from './resolve.js';
import { verifyCommand } from './verify.js';
import { revokeCommand } from './revoke.js';
import { channelCommand } from './channel.js';
import { pushCommand } from './push.js';
import { pullCommand } from './pull.js';
import { refreshCommand } from './refresh.js';
import { lockCommand } from './lock.js';
import { rebuildCommand } from './rebuild.js';
import { shellCommand } from './shell.js';
import { publishCommand } from './publish.js';
import { pruneCommand } from './prune.js';
import { completionCommand } from './completion.js';
import { initCommand } from './init.js';
import { diffCommand } from './diff.js';
import { reportCommand } from './report.js';
import { planCommand } from './plan.js';

/** Every command, in the order `kiln --help` lists them. */
export const commands: Command[] = [
  initCommand,
  buildCommand,
  planCommand,
  lockCommand,
  rebuildCommand,
  cacheCommand,
  shellCommand,
  bootCommand,
  validateCommand,
  schemaCommand,
  releasesCommand,
  resolveCommand,
  verifyCommand,
  diffCommand,
  reportCommand,
  revokeCommand,
  channelCommand,
  refreshCommand,
  pushCommand,
  pullCommand,
  publishCommand,
  pruneCommand,
  applyCommand,
  statusCommand,
  doctorCommand,
  sealCommand,
  auditCommand,
  completionCommand(() => commands),
];
