import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InterruptedError, KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { BOOT_MODES, type BootMode } from '../cloud/fitness.js';
import { loadTemplate } from '../template/load.js';
import { waitSeconds, type AwsPublishConfig } from '../template/schema.js';
import { STORE_USAGE, storeFromFlags, storeOptions, type StoreFlags } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const publishCommand: Command = {
  name: 'publish',
  summary: 'Put a release into a cloud: an AMI per region, an Azure gallery image version, or a GCE image (tagged with its version), recorded on the release',
  usage: `kiln publish name@version --to aws|azure|gce [--region R]... [--boot-mode uefi-preferred|uefi|legacy-bios] [--parallel N] [--wait 30m] [--json] [--sign-key FILE] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...storeOptions, to: { type: 'string', description: 'The cloud to publish to (settings from kiln.yaml publish.<cloud>)', value: 'aws|azure|gce' }, region: { type: 'string', multiple: true, description: 'AWS: the regions, instead of kiln.yaml publish.aws.regions (repeatable)', value: 'R' }, 'boot-mode': { type: 'string', description: 'AWS: the AMI\'s boot mode (default: from the disk)', value: 'uefi-preferred|uefi|legacy-bios' },
      parallel: { type: 'string', description: 'AWS: snapshot blocks uploaded at once', value: 'N' }, wait: { type: 'string', description: 'The longest to wait for the cloud to finish, e.g. 30m', value: 'DURATION' }, json: { type: 'boolean', description: 'Print the cloud ids as JSON on stdout' }, verbose: { type: 'boolean', description: 'Show each request' },
    });
    if (positionals.length !== 1 || !values.to) throw new KilnError('kiln publish needs a release and --to', { hint: `usage: ${this.usage}`, exitCode: 2 });
    if (values.to !== 'aws' && values.to !== 'azure' && values.to !== 'gce') throw new KilnError(`kiln publish --to ${values.to}: the clouds Kiln publishes to are: aws, azure, gce`, { exitCode: 2 });
    const yaml = join(process.cwd(), 'kiln.yaml');
    if (values.to === 'azure') return publishAzure(positionals[0], values, yaml);
    if (values.to === 'gce') return publishGce(positionals[0], values, yaml);
    const cfg: Partial<AwsPublishConfig> = existsSync(yaml) ? loadTemplate(yaml).config.publish?.aws ?? {} : {};
    const regions = values.region?.length ? values.region : cfg.regions ?? [];
    if (!regions.length) throw new KilnError('no AWS region to publish to', { hint: 'pass --region eu-west-1 (repeat for more), or set publish.aws.regions in kiln.yaml', exitCode: 2 });
    const bootMode = values['boot-mode'] ?? cfg.boot_mode;
    if (bootMode !== undefined && !(BOOT_MODES as readonly string[]).includes(bootMode)) throw new KilnError(`--boot-mode ${bootMode}: expected one of ${BOOT_MODES.join(', ')}`, { exitCode: 2 });
    const parallel = values.parallel !== undefined ? Number(values.parallel) : cfg.parallel;
    if (parallel !== undefined && (!Number.isInteger(parallel) || parallel < 1 || parallel > 100)) throw new KilnError(`--parallel ${values.parallel}: expected a whole number from 1 to 100`, { exitCode: 2 });
    let wait: number | undefined;
    try { wait = values.wait ?? cfg.wait ? waitSeconds(values.wait ?? cfg.wait ?? '') : undefined; } catch { throw new KilnError(`--wait ${values.wait}: expected a duration such as 30m or 90s`, { exitCode: 2 }); }
    const store = await storeFromFlags(values);
    const logger = createLogger({ verbose: values.verbose });
    const { publishReleaseToAws } = await import('../cloud/aws/publish.js');
    const out = await interruptible((signal) => publishReleaseToAws(store, positionals[0], { regions, bootMode: bootMode as BootMode | undefined, parallel, waitSeconds: wait, logger, signal }));
    if (values.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    else for (const p of out) process.stdout.write(`aws\t${p.region}\t${p.imageId}${p.existing ? '\t(already published)' : ''}\n`);
    return 0;
  },
};

async function publishAzure(ref: string, values: { json?: boolean; verbose?: boolean; parallel?: string; region?: string[] } & StoreFlags, yaml: string): Promise<number> {
  const cfg = existsSync(yaml) ? loadTemplate(yaml).config.publish?.azure : undefined;
  if (!cfg) throw new KilnError('kiln publish --to azure needs publish.azure in kiln.yaml (subscription, resource_group, location, storage_account, gallery, publisher, sku, regions)', { hint: 'kiln schema shows every field', exitCode: 2 });
  const regions = values.region?.length ? values.region : cfg.regions;
  const parallel = values.parallel !== undefined ? Number(values.parallel) : undefined;
  if (parallel !== undefined && (!Number.isInteger(parallel) || parallel < 1 || parallel > 100)) throw new KilnError(`--parallel ${values.parallel}: expected a whole number from 1 to 100`, { exitCode: 2 });
  const store = await storeFromFlags(values);
  const logger = createLogger({ verbose: values.verbose });
  const { publishReleaseToAzure } = await import('../cloud/azure/publish.js');
  const p = await interruptible((signal) => publishReleaseToAzure(store, ref, { ...cfg, regions }, { logger, parallel, signal }));
  if (values.json) process.stdout.write(JSON.stringify(p, null, 2) + '\n');
  else process.stdout.write(`azure\t${p.location}\t${p.versionId}${p.existing ? '\t(already published)' : ''}\n`);
  return 0;
}

async function publishGce(ref: string, values: { json?: boolean; verbose?: boolean; region?: string[]; parallel?: string; 'boot-mode'?: string; wait?: string } & StoreFlags, yaml: string): Promise<number> {
  const cfg = existsSync(yaml) ? loadTemplate(yaml).config.publish?.gce : undefined;
  if (!cfg) throw new KilnError('kiln publish --to gce needs publish.gce in kiln.yaml (project, bucket)', { hint: 'kiln schema shows every field', exitCode: 2 });
  for (const flag of ['region', 'parallel', 'boot-mode'] as const) {
    if (values[flag] !== undefined) throw new KilnError(`--${flag} does not apply to gce: a Compute Engine image is global, uploaded as one resumable stream, with the boot modes its disk has`, { exitCode: 2 });
  }
  let wait = cfg.wait;
  if (values.wait !== undefined) {
    try { waitSeconds(values.wait); wait = values.wait; } catch { throw new KilnError(`--wait ${values.wait}: expected a duration such as 30m or 90s`, { exitCode: 2 }); }
  }
  const store = await storeFromFlags(values);
  const logger = createLogger({ verbose: values.verbose });
  const { publishReleaseToGce } = await import('../cloud/gce/publish.js');
  const p = await interruptible((signal) => publishReleaseToGce(store, ref, { ...cfg, wait }, { logger, signal }));
  if (values.json) process.stdout.write(JSON.stringify(p, null, 2) + '\n');
  else process.stdout.write(`gce\t${p.project}\t${p.path}${p.existing ? '\t(already published)' : ''}\n`);
  return 0;
}

/** Runs an upload that Ctrl-C or SIGTERM stops through its abort signal (the next run resumes it). */
async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const onInt = () => ac.abort(new InterruptedError('SIGINT'));
  const onTerm = () => ac.abort(new InterruptedError('SIGTERM'));
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  try {
    return await fn(ac.signal);
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}
