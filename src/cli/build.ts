import { build, printSummary } from '../pipeline/build.js';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { findTemplate, loadTemplate } from '../template/load.js';
import { parse, type Command } from './command.js';
import { buildStore } from '../pipeline/steps/release-store.js';
import { waitSeconds } from '../template/schema.js';

export const buildCommand: Command = {
  name: 'build',
  summary: 'Build the image at the git tag of HEAD: source, playbook, seal, disk, formats, release',
  usage: 'kiln build [--file kiln.yaml] [--snapshot] [--on-error=cleanup|keep] [--out DIR] [--no-release] [--no-cache] [--cache oci://host/prefix] [--if-released fail|verify] [--verbose] [--json]',
  async run(argv) {
    const { values } = parse(this, argv, {
      file: { type: 'string', short: 'f', description: 'The kiln.yaml to build (default: found from the current directory up)', value: 'kiln.yaml' },
      snapshot: { type: 'boolean', description: 'Build the working tree as a snapshot version, without a release tag' },
      'on-error': { type: 'string', default: 'cleanup', description: 'What a failed build leaves: cleanup removes its work directory, keep leaves it for kiln shell', value: 'cleanup|keep' },
      out: { type: 'string', description: 'Write the artifacts to this directory', value: 'DIR' },
      'no-release': { type: 'boolean', description: 'Do not put the result in the release store' },
      'no-cache': { type: 'boolean', description: 'Run every step, using no step cache entry (and storing none)' },
      cache: { type: 'string', description: 'Also use a step cache shared through a registry (else KILN_CACHE_REMOTE)', value: 'oci://host[:port]/prefix' },
      'if-released': { type: 'string', default: 'fail', description: 'When the version is released already: fail before building, or verify: build, and pass only if the artifacts are the same', value: 'fail|verify' },
      verbose: { type: 'boolean', short: 'v', description: 'Show every task and the commands run' },
      json: { type: 'boolean', description: 'Print the build record as JSON on stdout' },
    }, false);
    const onError = values['on-error'];
    if (onError !== 'cleanup' && onError !== 'keep') throw new KilnError(`--on-error must be cleanup or keep, not ${onError}`, { exitCode: 2 });
    const ifReleased = values['if-released'];
    if (ifReleased !== 'fail' && ifReleased !== 'verify') throw new KilnError(`--if-released must be fail or verify, not ${ifReleased}`, { exitCode: 2 });
    const remoteCache = values.cache ?? (process.env.KILN_CACHE_REMOTE || undefined);
    if (remoteCache && !remoteCache.startsWith('oci://')) throw new KilnError(`--cache: expected oci://host[:port]/prefix, got ${JSON.stringify(remoteCache)}`, { exitCode: 2 });
    const logger = createLogger({ verbose: values.verbose });
    const template = loadTemplate(findTemplate(values.file ?? '.'));
    const record = await build(template, { snapshot: Boolean(values.snapshot), onError, outDir: values.out, noRelease: values['no-release'], noCache: values['no-cache'], ifReleased, remoteCache }, logger);
    printSummary(record, logger);
    if (values.json) process.stdout.write(JSON.stringify(record, null, 2) + '\n');
    const aws = template.config.publish.aws;
    if (aws?.on_build && record.release) {
      // The release is made and immutable whatever happens here; a failed publish is retried with kiln publish.
      try {
        const out = await (await import('../cloud/aws/publish.js')).publishReleaseToAws(await buildStore({ template }), record.release.ref, {
          regions: aws.regions, bootMode: aws.boot_mode, parallel: aws.parallel, waitSeconds: waitSeconds(aws.wait), logger,
        });
        for (const p of out) logger.info(`published to aws ${p.region}: ${p.imageId}${p.existing ? ' (already there)' : ''}`);
      } catch (e) {
        if (e instanceof KilnError) throw new KilnError(`${record.release.ref} is released, but publishing it to AWS failed: ${e.message}`, { detail: e.detail, hint: `${e.hint ? `${e.hint}; then ` : ''}kiln publish ${record.release.ref} --to aws` });
        throw e;
      }
    }
    return 0;
  },
};
