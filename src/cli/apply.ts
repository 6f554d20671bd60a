import { parseHost, uniqueHosts, type ApplyHost } from '../apply/hosts.js';
import { applyExitCode, applyRelease, repoRoot } from '../apply/index.js';
import { batchEndLine, rolloutLines, summaryLines, taskLine } from '../apply/report.js';
import { quoteArg } from '../exec.js';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { signedByLine } from '../store/policy.js';
import type { ReleaseRecord } from '../store/index.js';
import type { ReleaseStore } from '../store/release-store.js';
import { parse, type Command } from './command.js';

/** The flags of the commands that reach hosts over SSH (apply, status), and the output ones. */
export const connectionOptions = {
  host: { type: 'string', multiple: true, description: 'A host to reach over SSH: [user@]address[:port] (user root, port --port or 22)', value: '[user@]addr[:port]' },
  inventory: { type: 'string', short: 'i', description: 'An Ansible inventory file (groups, host variables) instead of or besides --host', value: 'FILE' },
  key: { type: 'string', description: 'The SSH private key for every host (IdentitiesOnly)', value: 'FILE' },
  port: { type: 'string', description: 'The SSH port of --host hosts that name none', value: 'N' },
  'known-hosts': { type: 'string', description: 'Check host keys against this known_hosts file (default: your own)', value: 'FILE' },
  'accept-new': { type: 'boolean', description: 'Pin the key of a host seen for the first time into the known_hosts file; a changed key is still refused' },
  'insecure-host-keys': { type: 'boolean', description: 'Do not check host keys at all (throwaway VMs only)' },
  json: { type: 'boolean', description: 'Print the result as JSON on stdout' },
  verbose: { type: 'boolean', short: 'v', description: 'Show every task, skipped ones too, and the commands run' },
} as const;

/** The --host list, each with --port as its default port. */
export function hostsFromFlags(values: { host?: string[]; port?: string }): ApplyHost[] {
  if (values.port !== undefined && !(/^[0-9]{1,5}$/.test(values.port) && Number(values.port) >= 1 && Number(values.port) <= 65535)) {
    throw new KilnError(`--port ${JSON.stringify(values.port)}: expected a port number, 1 to 65535`, { exitCode: 2 });
  }
  return uniqueHosts((values.host ?? []).map((h) => parseHost(h, { port: values.port !== undefined ? Number(values.port) : undefined })));
}

export const applyCommand: Command = {
  name: 'apply',
  summary: "Upgrade running machines to a release: apply that release's playbook over SSH, then stamp the version",
  usage: 'kiln apply <name@version> (--host [user@]addr[:port] ... | --inventory FILE) [--key FILE] [--port N] [--check] [--diff] [--allow-downgrade] [--batch N|N%[,...]] [--max-failures N|N%] [--resume] [--known-hosts FILE] [--accept-new | --insecure-host-keys] [--store S] [--json] [-v]   (exit: 0 done/in sync, 1 error or a host failed/unhealthy, 3 drift with --check, 4 hosts unreachable)',
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...connectionOptions,
      check: { type: 'boolean', description: 'Ansible\'s check mode: report drift (exit 3) and change nothing' },
      diff: { type: 'boolean', description: 'Show the diff of each file a task changes or would change' },
      'allow-downgrade': { type: 'boolean', description: 'Apply the release to hosts that run a newer version' },
      batch: { type: 'string', description: 'Roll out in batches: N hosts, N% of them, or a list such as 1,25%,100% (Ansible\'s serial)', value: 'N|N%[,...]' },
      'max-failures': { type: 'string', description: 'Failed or unhealthy hosts tolerated over the whole rollout before it stops: N or N% (default 0)', value: 'N|N%' },
      resume: { type: 'boolean', description: 'Continue the stopped or interrupted rollout of this release to these hosts' },
      ...storeOptions,
    });
    if (positionals.length !== 1) throw new KilnError('kiln apply takes one release, name@version', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const logger = createLogger({ verbose: values.verbose });
    const hosts = hostsFromFlags(values);
    const store = await storeFromFlags(values);
    const { record: rec, signers } = await releaseToApply(store, positionals[0]);
    const check = Boolean(values.check);
    const diff = Boolean(values.diff);
    const isTTY = Boolean(process.stderr.isTTY);
    const clear = () => { if (isTTY) process.stderr.write('\r\x1b[K'); };
    logger.info(`applying ${rec.name}@${rec.version} (commit ${rec.git.commit.slice(0, 12)}, ${signedByLine(signers, store.trust)})${check ? ' in check mode: nothing will change' : ''}`);
    const result = await applyRelease({
      release: { name: rec.name, version: rec.version, commit: rec.git.commit, tag: rec.git.tag, template: rec.template!, sourceDateEpoch: rec.sourceDateEpoch },
      repoDir: await repoRoot(process.cwd()),
      hosts, inventory: values.inventory, keyFile: values.key, check, diff,
      allowDowngrade: Boolean(values['allow-downgrade']), knownHosts: values['known-hosts'], acceptNew: Boolean(values['accept-new']), insecureHostKeys: Boolean(values['insecure-host-keys']),
      logger,
      onStatus: (s) => { if (isTTY) process.stderr.write(`\r\x1b[K  ${s.slice(0, 100)}`); },
      onTask: (t) => { if (t.status !== 'skipped' || values.verbose) { clear(); logger.info(taskLine(t)); } },
      batch: values.batch, maxFailures: values['max-failures'], resume: Boolean(values.resume),
      onBatch: (e) => {
        clear();
        if (e.kind === 'start' && e.of > 1) logger.info(`batch ${e.batch}/${e.of}: ${e.hosts.join(', ')}`);
        if (e.kind === 'health') logger.info(`health check${e.of > 1 ? ` of batch ${e.batch}/${e.of}` : ''}: ${e.check}`);
        if (e.kind === 'end' && e.of > 1) logger.info(batchEndLine(e, e.outcomes));
      },
    }).finally(clear);
    for (const l of summaryLines(result.outcomes, { check, diff })) logger.info(l);
    const resumeCommand = `kiln ${['apply', ...argv.filter((a) => a !== '--resume' && a !== '--json'), '--resume'].map(quoteArg).join(' ')}`;
    for (const l of rolloutLines(result, { batch: values.batch, resumeCommand })) logger.info(l);
    if (values.json) {
      const { outcomes, ...rest } = result;
      process.stdout.write(JSON.stringify({ release: `${rec.name}@${rec.version}`, check, ...rest, hosts: outcomes }, null, 2) + '\n');
    }
    return applyExitCode(result.outcomes);
  },
};

/** The release record, refused when its signature does not satisfy the trust policy or it is revoked. */
async function releaseToApply(store: ReleaseStore, ref: string): Promise<{ record: ReleaseRecord; signers: string[] }> {
  const e = await store.entry(ref);
  const d = await store.details(e);
  const problem = store.trustProblem(d);
  if (problem) throw new KilnError(`refusing ${e.name}@${e.version}: ${problem}`, { hint: 'run kiln verify for details' });
  if (d.revocation) throw new KilnError(`${e.name}@${e.version} is revoked: ${d.revocation.reason}`, { hint: 'apply a newer release' });
  if (!e.record.template) throw new KilnError(`release ${e.name}@${e.version} does not record its kiln.yaml path`);
  return { record: e.record, signers: store.signerNames(d) };
}
