import { describeLock, formatChange } from '../lock/file.js';
import { resolveLock } from '../pipeline/lock-resolve.js';
import { createLogger } from '../log.js';
import { findTemplate, loadTemplate } from '../template/load.js';
import { parse, type Command } from './command.js';

export const lockCommand: Command = {
  name: 'lock',
  summary: 'Write kiln.lock: the exact Debian packages (version, sha256) the image installs, or the vendor image or parent release it starts from; builds then use exactly those',
  usage: 'kiln lock [--update] [--file kiln.yaml] [--verbose] [--json]',
  async run(argv) {
    const { values } = parse(this, argv, {
      update: { type: 'boolean', description: 'Resolve the package set again from the archive and rewrite kiln.lock' },
      file: { type: 'string', short: 'f', description: 'The kiln.yaml to lock (default: found from the current directory up)', value: 'kiln.yaml' },
      verbose: { type: 'boolean', short: 'v', description: 'Show the commands run' },
      json: { type: 'boolean', description: 'Print the lock summary as JSON on stdout' },
    }, false);
    const logger = createLogger({ verbose: values.verbose });
    const template = loadTemplate(findTemplate(values.file ?? '.'));
    const r = await resolveLock(template, logger, { update: Boolean(values.update) });
    logger.info('');
    if (!r.previous) {
      logger.info(`wrote ${r.file}: ${describeLock(r.lock)}. Commit it${r.lock.archive || r.lock.tools ? ' and kiln.lock.d/' : ''}: builds now use exactly ${r.lock.upstream ? 'that' : 'these'}.`);
    } else if (!r.changes.length) {
      logger.info(`${r.file} is up to date: ${describeLock(r.lock)}, nothing changed`);
    } else {
      const n = (k: string) => r.changes.filter((c) => c.kind === k).length;
      if (n('upstream')) logger.info(`updated ${r.file}: the upstream changed`);
      logger.info(`updated ${r.file}: ${n('added')} added, ${n('removed')} removed, ${n('upgraded')} upgraded, ${n('downgraded')} downgraded${n('changed') ? `, ${n('changed')} rebuilt` : ''}`);
      for (const c of r.changes) logger.info(`  ${formatChange(c)}`);
      logger.info('review and commit kiln.lock');
    }
    if (values.json) process.stdout.write(JSON.stringify({ file: r.file, packages: r.lock.packages?.length ?? 0, ...(r.lock.upstream ? { upstream: r.lock.upstream } : {}), changes: r.changes, written: r.written }, null, 2) + '\n');
    return 0;
  },
};

