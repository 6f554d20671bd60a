import { checkRelease, repoRoot, type ApplyRelease } from '../apply/index.js';
import { fleetStatus, statusExitCode, statusTable } from '../apply/status.js';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { connectionOptions, hostsFromFlags } from './apply.js';
import { parse, type Command } from './command.js';

export const statusCommand: Command = {
  name: 'status',
  summary: 'What a fleet runs: each host\'s image and version, against a channel, and with --check whether its configuration drifted from its release',
  usage: 'kiln status (--host [user@]addr[:port] ... | --inventory FILE) [--channel name@channel] [--check] [--key FILE] [--port N] [--known-hosts FILE] [--accept-new | --insecure-host-keys] [--store S] [--json] [-v]   (exit: 0 in sync, 3 drift with --check, 4 hosts unreachable)',
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...connectionOptions, channel: { type: 'string', description: 'Show whether each host is behind, on or ahead of this channel', value: 'name@channel' }, check: { type: 'boolean', description: 'Check each host\'s configuration against its own release in check mode (drift: exit 3)' }, ...storeOptions });
    if (positionals.length) throw new KilnError('kiln status takes no release: it reads what each host runs', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const logger = createLogger({ verbose: values.verbose });
    const hosts = hostsFromFlags(values);
    const needStore = Boolean(values.channel || values.check);
    const store = needStore ? await storeFromFlags(values) : undefined;
    let channel: { ref: string; name: string; version: string } | undefined;
    if (values.channel) {
      const m = /^([^@]+)@([^@]+)$/.exec(values.channel);
      if (!m) throw new KilnError(`--channel ${values.channel}: expected name@channel, e.g. web@production`, { exitCode: 2 });
      const c = await store!.channelGet(m[1], m[2]);
      if (!c) throw new KilnError(`no channel ${m[2]} for ${m[1]} in the store`, { hint: `kiln channel list ${m[1]}` });
      channel = { ref: values.channel, name: m[1], version: c.version };
    }
    const releaseOf = async (name: string, version: string): Promise<ApplyRelease | string> => {
      let e;
      try { e = await store!.entry(`${name}@${version}`); } catch { return `${name}@${version} is not in the store`; }
      const d = await store!.details(e);
      const problem = store!.trustProblem(d);
      if (problem) return `not checked: ${problem}`;
      if (d.revocation) return `not checked: ${name}@${version} is revoked (${d.revocation.reason}): apply a newer release`;
      if (!e.record.template) return `not checked: the release does not record its kiln.yaml path`;
      const r = { name: e.name, version: e.version, commit: e.record.git.commit, tag: e.record.git.tag, template: e.record.template, sourceDateEpoch: e.record.sourceDateEpoch };
      checkRelease(r);
      return r;
    };
    const states = await fleetStatus({
      hosts, inventory: values.inventory, keyFile: values.key, knownHosts: values['known-hosts'], acceptNew: Boolean(values['accept-new']),
      insecureHostKeys: Boolean(values['insecure-host-keys']), logger, check: Boolean(values.check), channel, releaseOf,
      repoDir: values.check ? await repoRoot(process.cwd()) : process.cwd(),
    });
    if (values.json) process.stdout.write(JSON.stringify({ channel: channel ? { ref: channel.ref, version: channel.version } : undefined, check: Boolean(values.check), hosts: states }, null, 2) + '\n');
    else for (const l of statusTable(states, { check: Boolean(values.check), channel: values.channel })) process.stdout.write(l + '\n');
    return statusExitCode(states);
  },
};
