import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { pruneAws } from '../cloud/aws/prune.js';
import { pruneAzure } from '../cloud/azure/prune.js';
import { loadTemplate } from '../template/load.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const pruneCommand: Command = {
  name: 'prune',
  summary: 'Retire an image\'s old cloud images (only those Kiln made); a dry run unless --apply',
  usage: `kiln prune <name> --cloud aws|azure --keep N [--keep-days D] [--region R]... [--apply] [--json] [--sign-key FILE] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse('prune', this.usage, argv, {
      ...storeOptions, cloud: { type: 'string' }, region: { type: 'string', multiple: true }, keep: { type: 'string' },
      'keep-days': { type: 'string' }, apply: { type: 'boolean' }, json: { type: 'boolean' },
    });
    if (positionals.length !== 1 || !values.cloud || values.keep === undefined) throw new KilnError('kiln prune needs an image name, --cloud and --keep', { hint: `usage: ${this.usage}`, exitCode: 2 });
    if (values.cloud !== 'aws' && values.cloud !== 'azure') throw new KilnError(`kiln prune --cloud ${values.cloud}: the clouds Kiln prunes are: aws, azure`, { exitCode: 2 });
    const keep = Number(values.keep);
    const keepDays = values['keep-days'] === undefined ? 0 : Number(values['keep-days']);
    if (!Number.isInteger(keep) || keep < 1) throw new KilnError(`--keep ${values.keep}: expected a whole number, 1 or more`, { exitCode: 2 });
    if (!Number.isFinite(keepDays) || keepDays < 0) throw new KilnError(`--keep-days ${values['keep-days']}: expected a number of days`, { exitCode: 2 });
    const yaml = join(process.cwd(), 'kiln.yaml');
    const config = existsSync(yaml) ? loadTemplate(yaml).config : undefined;
    const store = await storeFromFlags(values);
    const logger = createLogger({});
    const rule = { keep, keepDays };
    const apply = Boolean(values.apply);
    let rows: { action: 'keep' | 'delete'; where: string; id: string; version: string; what: string; why: string }[];
    let where: string;
    if (values.cloud === 'azure') {
      const cfg = config?.publish?.azure;
      if (!cfg) throw new KilnError('kiln prune --cloud azure needs publish.azure in kiln.yaml (the gallery and storage account)', { exitCode: 2 });
      const plan = await pruneAzure(store, positionals[0], cfg, { rule, apply, logger });
      rows = plan.map((d) => ({ action: d.action, where: cfg.location, id: d.id, version: d.version, what: d.blob ?? '-', why: d.why }));
      where = `${cfg.gallery}/${cfg.image_definition ?? positionals[0]}`;
      if (values.json) process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
    } else {
      const regions = values.region?.length ? values.region : config?.publish?.aws?.regions ?? [];
      const plan = await pruneAws(store, positionals[0], { regions, rule, apply, logger });
      rows = plan.map((d) => ({ action: d.action, where: d.region, id: d.imageId, version: d.version, what: d.snapshots.join(',') || '-', why: d.why }));
      where = regions.join(', ');
      if (values.json) process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
    }
    if (!values.json) for (const d of rows) process.stdout.write(`${apply && d.action === 'delete' ? 'deleted' : d.action}\t${d.where}\t${d.id}\t${d.version}\t${d.what}\t${d.why}\n`);
    const n = rows.filter((d) => d.action === 'delete').length;
    const kind = values.cloud === 'azure' ? 'gallery version(s)' : 'AMI(s)';
    const with_ = values.cloud === 'azure' ? 'their blobs' : 'their snapshots';
    process.stderr.write(rows.length === 0 ? `no ${kind} of ${positionals[0]} made by Kiln in ${where}\n`
      : apply ? `${n} ${kind} deleted with ${with_}, ${rows.length - n} kept\n`
        : `dry run: ${n} ${kind} would be deleted with ${with_}, ${rows.length - n} kept; pass --apply to do it\n`);
    return 0;
  },
};
