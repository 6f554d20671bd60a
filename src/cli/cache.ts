import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FILE_ENTRY_KINDS, verifyEntries } from '../cache-entry.js';
import { KilnError } from '../errors.js';
import { createLogger, humanBytes } from '../log.js';
import { cacheLimit, StepCache } from '../pipeline/step-cache.js';
import { findTemplate, loadTemplate } from '../template/load.js';
import { parseSize } from '../template/schema.js';
import { parse, type Command } from './command.js';

/** The cache a build of this template uses: KILN_CACHE_DIR, else .kiln/cache beside kiln.yaml. */
function cacheDirFor(file: string | undefined): string {
  if (process.env.KILN_CACHE_DIR) return process.env.KILN_CACHE_DIR;
  return join(loadTemplate(findTemplate(file ?? '.')).dir, '.kiln', 'cache');
}

export const cacheCommand: Command = {
  name: 'cache',
  summary: "List, verify or prune the step cache (the costly steps' outputs, by the hash of their inputs)",
  usage: 'kiln cache list|verify|prune [--file kiln.yaml] [--max-size SIZE | --all] [--json]',
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      file: { type: 'string', short: 'f', description: 'The kiln.yaml whose cache to use (default: found from the current directory up)', value: 'kiln.yaml' }, 'max-size': { type: 'string', description: 'prune: remove the least recently used entries until the cache is this small', value: 'SIZE' }, all: { type: 'boolean', description: 'prune: remove every entry' }, json: { type: 'boolean', description: 'Print the result as JSON on stdout' },
    }, true);
    const [action] = positionals;
    const dir = cacheDirFor(values.file);
    const logger = createLogger({});
    const cache = new StepCache(dir, logger);
    if (!existsSync(dir)) logger.info(`${dir}: no cache yet`);
    if (action === 'list') {
      const entries = cache.listAll();
      if (values.json) { process.stdout.write(JSON.stringify(entries, null, 2) + '\n'); return 0; }
      for (const e of entries) process.stdout.write(`${e.key.slice(0, 12)}  ${e.step.padEnd(13)} ${humanBytes(e.bytes).padStart(10)}  used ${e.lastUsed || '?'}  made ${e.created || '?'}\n`);
      process.stdout.write(`${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}, ${humanBytes(entries.reduce((s, e) => s + e.bytes, 0))} in ${dir} (limit ${humanBytes(cacheLimit())}, KILN_CACHE_MAX_SIZE)\n`);
      return 0;
    }
    if (action === 'verify') {
      const r = await cache.verify();
      const files = { checked: 0, removed: 0 };
      for (const k of FILE_ENTRY_KINDS) {
        const v = await verifyEntries(join(dir, k.dir), logger, k.ext);
        files.checked += v.checked;
        files.removed += v.removed;
      }
      process.stdout.write(`${r.checked} step entr${r.checked === 1 ? 'y' : 'ies'} and ${files.checked} file entr${files.checked === 1 ? 'y' : 'ies'} (base trees, disks, indexes) hashed; ${r.removed.length + files.removed} damaged and removed\n`);
      return r.removed.length + files.removed ? 1 : 0;
    }
    if (action === 'prune') {
      if (values.all && values['max-size']) throw new KilnError('--all and --max-size cannot be used together', { exitCode: 2 });
      let limit = cacheLimit();
      if (values.all) limit = 0;
      else if (values['max-size']) {
        try { limit = parseSize(values['max-size']); } catch { throw new KilnError(`--max-size: expected a size such as 20GiB or 500MiB, got ${JSON.stringify(values['max-size'])}`, { exitCode: 2 }); }
      }
      const r = cache.prune(limit);
      process.stdout.write(`removed ${r.removed.length} entr${r.removed.length === 1 ? 'y' : 'ies'} (${humanBytes(r.removed.reduce((s, e) => s + e.bytes, 0))}); ${humanBytes(r.keptBytes)} kept\n`);
      return 0;
    }
    throw new KilnError(`kiln cache: expected list, verify or prune, got ${action === undefined ? 'nothing' : JSON.stringify(action)}`, { exitCode: 2, hint: this.usage });
  },
};
