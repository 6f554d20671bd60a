import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { loadTemplate } from '../template/load.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const pruneCommand: Command = {
  name: 'prune',
  summary: 'Retire an image\'s old cloud images (only those Kiln made); a dry run unless --apply',
  usage: `kiln prune <name> --cloud aws|azure|gce --keep N [--keep-days D] [--grace-days G (gce)] [--region R]... [--apply] [--json] [--sign-key FILE] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...storeOptions, cloud: { type: 'string', description: 'The cloud whose images of this name to retire', value: 'aws|azure|gce' }, region: { type: 'string', multiple: true, description: 'Only these regions (AWS; repeatable)', value: 'R' }, keep: { type: 'string', description: 'Keep the newest N versions (and every version a channel points to)', value: 'N' },
      'keep-days': { type: 'string', description: 'Also keep versions younger than D days', value: 'D' }, 'grace-days': { type: 'string', description: 'GCE: delete an image only once it has been deprecated for G days (default 7)', value: 'G' }, apply: { type: 'boolean', description: 'Retire the images; without it, only show what would be retired' }, json: { type: 'boolean', description: 'Print the plan or the result as JSON on stdout' },
    });
    if (positionals.length !== 1 || !values.cloud || values.keep === undefined) throw new KilnError('kiln prune needs an image name, --cloud and --keep', { hint: `usage: ${this.usage}`, exitCode: 2 });
    if (values.cloud !== 'aws' && values.cloud !== 'azure' && values.cloud !== 'gce') throw new KilnError(`kiln prune --cloud ${values.cloud}: the clouds Kiln prunes are: aws, azure, gce`, { exitCode: 2 });
    if (values['grace-days'] !== undefined && values.cloud !== 'gce') throw new KilnError('--grace-days goes with --cloud gce (images are deprecated first, deleted after the grace period)', { exitCode: 2 });
    const graceDays = values['grace-days'] === undefined ? 7 : Number(values['grace-days']);
    if (!Number.isFinite(graceDays) || graceDays < 0) throw new KilnError(`--grace-days ${values['grace-days']}: expected a number of days`, { exitCode: 2 });
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
    let rows: { action: 'keep' | 'delete' | 'deprecate' | 'wait'; where: string; id: string; version: string; what: string; why: string }[];
    let where: string;
    if (values.cloud === 'gce') {
      const cfg = config?.publish?.gce;
      if (!cfg) throw new KilnError('kiln prune --cloud gce needs publish.gce in kiln.yaml (the project and bucket)', { exitCode: 2 });
      const plan = await (await import('../cloud/gce/prune.js')).pruneGce(store, positionals[0], cfg, { rule, graceDays, apply, logger });
      rows = plan.map((d) => ({ action: d.step === 'none' ? 'keep' : d.step, where: cfg.project, id: d.image, version: d.version, what: d.deprecated ? `deprecated ${d.deprecated}` : '-', why: d.why }));
      where = cfg.project;
      if (values.json) process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
    } else if (values.cloud === 'azure') {
      const cfg = config?.publish?.azure;
      if (!cfg) throw new KilnError('kiln prune --cloud azure needs publish.azure in kiln.yaml (the gallery and storage account)', { exitCode: 2 });
      const plan = await (await import('../cloud/azure/prune.js')).pruneAzure(store, positionals[0], cfg, { rule, apply, logger });
      rows = plan.map((d) => ({ action: d.action, where: cfg.location, id: d.id, version: d.version, what: d.blob ?? '-', why: d.why }));
      where = `${cfg.gallery}/${cfg.image_definition ?? positionals[0]}`;
      if (values.json) process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
    } else {
      const regions = values.region?.length ? values.region : config?.publish?.aws?.regions ?? [];
      const plan = await (await import('../cloud/aws/prune.js')).pruneAws(store, positionals[0], { regions, rule, apply, logger });
      rows = plan.map((d) => ({ action: d.action, where: d.region, id: d.imageId, version: d.version, what: d.snapshots.join(',') || '-', why: d.why }));
      where = regions.join(', ');
      if (values.json) process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
    }
    const done = { delete: 'deleted', deprecate: 'deprecated' } as Record<string, string>;
    if (!values.json) for (const d of rows) process.stdout.write(`${apply ? done[d.action] ?? d.action : d.action}\t${d.where}\t${d.id}\t${d.version}\t${d.what}\t${d.why}\n`);
    const n = rows.filter((d) => d.action === 'delete').length;
    const kind = { azure: 'gallery version(s)', aws: 'AMI(s)', gce: 'image(s)' }[values.cloud];
    const with_ = { azure: ' with their blobs', aws: ' with their snapshots', gce: '' }[values.cloud];
    const dep = rows.filter((d) => d.action === 'deprecate').length;
    const waiting = rows.filter((d) => d.action === 'wait').length;
    const gce = values.cloud === 'gce' ? `, ${dep} ${apply ? '' : 'would be '}deprecated${waiting ? `, ${waiting} deprecated less than ${graceDays} days ago left for now` : ''}` : '';
    const kept = rows.filter((d) => d.action === 'keep').length;
    process.stderr.write(rows.length === 0 ? `no ${kind} of ${positionals[0]} made by Kiln in ${where}\n`
      : apply ? `${n} ${kind} deleted${with_}${gce}, ${kept} kept\n`
        : `dry run: ${n} ${kind} would be deleted${with_}${gce}, ${kept} kept; pass --apply to do it\n`);
    return 0;
  },
};
