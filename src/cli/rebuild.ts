import { KilnError } from '../errors.js';
import { rebuildRelease, type RebuildReport } from '../reproduce/rebuild.js';
import { createLogger, humanSeconds } from '../log.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const rebuildCommand: Command = {
  name: 'rebuild',
  summary: 'Rebuild a release from its recorded commit and kiln.lock, without releasing; report "identical" or the first differing files',
  usage: 'kiln rebuild <name@version> [--keep] [--limit N] [--store S] [--json] [-v]',
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      keep: { type: 'boolean', description: 'Keep the rebuilt artifacts' },
      limit: { type: 'string', description: 'Show at most N differing files', value: 'N' },
      json: { type: 'boolean', description: 'Print the report as JSON on stdout' },
      verbose: { type: 'boolean', short: 'v', description: 'Show the build and the commands run' },
      ...storeOptions,
    });
    if (positionals.length !== 1) throw new KilnError('kiln rebuild takes one release, name@version', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const logger = createLogger({ verbose: values.verbose });
    const store = await storeFromFlags(values);
    const report = await rebuildRelease({
      ref: positionals[0], repoDir: process.cwd(), store, logger, keep: Boolean(values.keep),
      limit: values.limit ? Number(values.limit) : undefined, onStatus: (s) => logger.info(s),
    });
    printReport(report, logger.info);
    if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return report.identical ? 0 : 1;
  },
};

function printReport(r: RebuildReport, info: (m: string) => void): void {
  info('');
  if (r.identical) {
    info(`identical: ${r.release} rebuilt from ${r.commit.slice(0, 12)} in ${humanSeconds(r.durationMs)}; all ${r.artifacts.length} artifacts have the released sha256`);
    for (const a of r.artifacts) info(`  ${a.format.padEnd(6)} sha256:${a.released}`);
    return;
  }
  info(`DIFFERENT: ${r.release} rebuilt from ${r.commit.slice(0, 12)} does not match the release`);
  for (const a of r.artifacts) info(`  ${a.format.padEnd(6)} ${a.same ? 'same     ' : 'DIFFERENT'} released ${a.released.slice(0, 16)}… rebuilt ${a.rebuilt ? `${a.rebuilt.slice(0, 16)}…` : '(not built)'}`);
  if (r.lockSha256 && r.lockSha256.released !== r.lockSha256.rebuilt) info(`  kiln.lock differs: released ${r.lockSha256.released ?? 'none'}, rebuilt ${r.lockSha256.rebuilt ?? 'none'}`);
  if (r.files?.length) {
    info('first differing files in the root filesystem (release -> rebuild):');
    for (const f of r.files) info(`  ${f.path}: ${f.what.join(', ')}`);
  } else if (r.rawBytes) {
    info(`the root file trees are the same; ${r.rawBytes.count} bytes of the raw differ (filesystem metadata), first at offsets ${r.rawBytes.offsets.join(', ')}`);
  }
  if (r.outDir) info(`rebuilt artifacts kept in ${r.outDir}`);
}
