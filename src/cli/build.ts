import { resolve } from 'node:path';
import { build, printSummary } from '../pipeline/build.js';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { findTemplate, loadTemplate } from '../template/load.js';
import { parse, type Command } from './command.js';
import { buildStore } from '../pipeline/steps/release-store.js';
import { waitSeconds } from '../template/schema.js';
import { loadSigner, loadTrustedKey, type Signer, type TrustedKey } from '../store/signing.js';

export const buildCommand: Command = {
  name: 'build',
  summary: 'Build the image at the git tag of HEAD: source, playbook, seal, disk, formats, release',
  usage: 'kiln build [--file kiln.yaml] [--snapshot] [--on-error=cleanup|keep] [--out DIR] [--no-release] [--no-cache] [--cache oci://host/prefix [--cache-sign-key FILE] [--cache-trust-key FILE]...] [--if-released fail|verify] [--verbose] [--json]',
  async run(argv) {
    const { values } = parse(this, argv, {
      file: { type: 'string', short: 'f', description: 'The kiln.yaml to build (default: found from the current directory up)', value: 'kiln.yaml' },
      snapshot: { type: 'boolean', description: 'Build the working tree as a snapshot version, without a release tag' },
      'on-error': { type: 'string', default: 'cleanup', description: 'What a failed build leaves: cleanup removes its work directory, keep leaves it for kiln shell', value: 'cleanup|keep' },
      out: { type: 'string', description: 'Write the artifacts to this directory', value: 'DIR' },
      'no-release': { type: 'boolean', description: 'Do not put the result in the release store' },
      'no-cache': { type: 'boolean', description: 'Run every step, using no step cache entry (and storing none)' },
      cache: { type: 'string', description: 'Also use a step cache shared through a registry (else KILN_CACHE_REMOTE)', value: 'oci://host[:port]/prefix' },
      'cache-sign-key': { type: 'string', description: 'Sign the entries this build pushes to that cache with this private key, SSH or OpenPGP (else KILN_CACHE_SIGNING_KEY)', value: 'FILE' },
      'cache-trust-key': { type: 'string', multiple: true, description: 'Use an entry of that cache only when this public key signed it (else KILN_CACHE_TRUST_KEYS, comma-separated files)', value: 'FILE' },
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
    const keys = await remoteCacheKeys(values['cache-sign-key'], values['cache-trust-key'], Boolean(remoteCache && !values['no-cache']));
    const logger = createLogger({ verbose: values.verbose });
    const template = loadTemplate(findTemplate(values.file ?? '.'));
    const record = await build(template, { snapshot: Boolean(values.snapshot), onError, outDir: values.out, noRelease: values['no-release'], noCache: values['no-cache'], ifReleased, remoteCache, ...keys }, logger);
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

/**
 * The remote cache's keys, from the flags or else the environment, loaded before the build starts (a
 * key that cannot be read is an error now, not a warning at the first push). Flags without a cache
 * to use them on are a usage error; the environment's are ignored then (a CI job may set them for
 * every build, some of which run --no-cache).
 */
async function remoteCacheKeys(signFlag: string | undefined, trustFlags: string[] | undefined, used: boolean): Promise<{ remoteCacheSigner?: Signer; remoteCacheTrust?: TrustedKey[] }> {
  if (!used) {
    const flag = signFlag ? '--cache-sign-key' : trustFlags?.length ? '--cache-trust-key' : undefined;
    if (flag) throw new KilnError(`${flag} needs a remote cache to use it on`, { exitCode: 2, hint: 'add --cache oci://host[:port]/prefix (or set KILN_CACHE_REMOTE), without --no-cache' });
    return {};
  }
  const signFile = signFlag ?? (process.env.KILN_CACHE_SIGNING_KEY || undefined);
  const trustFiles = trustFlags?.length ? trustFlags : (process.env.KILN_CACHE_TRUST_KEYS ?? '').split(',').map((f) => f.trim()).filter(Boolean);
  return {
    ...(signFile ? { remoteCacheSigner: await loadSigner(resolve(signFile)) } : {}),
    ...(trustFiles.length ? { remoteCacheTrust: await Promise.all(trustFiles.map((f) => loadTrustedKey(resolve(f)))) } : {}),
  };
}
