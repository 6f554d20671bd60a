import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { pruneAws } from '../cloud/aws/prune.js';
import { loadTemplate } from '../template/load.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const pruneCommand: Command = {
  name: 'prune',
  summary: 'Retire an image\'s old cloud images (only those Kiln made); a dry run unless --apply',
  usage: `kiln prune <name> --cloud aws --keep N [--keep-days D] [--region R]... [--apply] [--json] [--sign-key FILE] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse('prune', this.usage, argv, {
      ...storeOptions, cloud: { type: 'string' }, region: { type: 'string', multiple: true }, keep: { type: 'string' },
      'keep-days': { type: 'string' }, apply: { type: 'boolean' }, json: { type: 'boolean' },
    });
    if (positionals.length !== 1 || !values.cloud || values.keep === undefined) throw new KilnError('kiln prune needs an image name, --cloud and --keep', { hint: `usage: ${this.usage}`, exitCode: 2 });
    if (values.cloud !== 'aws') throw new KilnError(`kiln prune --cloud ${values.cloud}: the clouds Kiln prunes are: aws`, { exitCode: 2 });
    const keep = Number(values.keep);
    const keepDays = values['keep-days'] === undefined ? 0 : Number(values['keep-days']);
    if (!Number.isInteger(keep) || keep < 1) throw new KilnError(`--keep ${values.keep}: expected a whole number, 1 or more`, { exitCode: 2 });
    if (!Number.isFinite(keepDays) || keepDays < 0) throw new KilnError(`--keep-days ${values['keep-days']}: expected a number of days`, { exitCode: 2 });
    const yaml = join(process.cwd(), 'kiln.yaml');
    const regions = values.region?.length ? values.region : existsSync(yaml) ? loadTemplate(yaml).config.publish?.aws?.regions ?? [] : [];
    const store = await storeFromFlags(values);
    const logger = createLogger({});
    const plan = await pruneAws(store, positionals[0], { regions, rule: { keep, keepDays }, apply: Boolean(values.apply), logger });
    if (values.json) {
      process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
    } else {
      for (const d of plan) process.stdout.write(`${values.apply && d.action === 'delete' ? 'deleted' : d.action}\t${d.region}\t${d.imageId}\t${d.version}\t${d.snapshots.join(',') || '-'}\t${d.why}\n`);
    }
    const n = plan.filter((d) => d.action === 'delete').length;
    process.stderr.write(plan.length === 0 ? `no AMI of ${positionals[0]} made by Kiln in ${regions.join(', ')}\n`
      : values.apply ? `${n} AMI(s) deregistered with their snapshots, ${plan.length - n} kept\n`
        : `dry run: ${n} AMI(s) would be deregistered with their snapshots, ${plan.length - n} kept; pass --apply to do it\n`);
    return 0;
  },
};
