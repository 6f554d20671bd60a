import { applyRelease, repoRoot, type HostOutcome } from '../apply/index.js';
import { parseHost } from '../apply/hosts.js';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const applyCommand: Command = {
  name: 'apply',
  summary: "Upgrade running machines to a release: apply that release's playbook over SSH, then stamp the version",
  usage: 'kiln apply <name@version> (--host user@addr[:port] ... | --inventory FILE) [--key FILE] [--port N] [--check] [--diff] [--allow-downgrade] [--known-hosts FILE | --insecure-host-keys] [--store S] [--json] [-v]',
  async run(argv) {
    const { values, positionals } = parse('apply', this.usage, argv, {
      host: { type: 'string', multiple: true },
      inventory: { type: 'string', short: 'i' },
      key: { type: 'string' },
      port: { type: 'string' },
      check: { type: 'boolean' },
      diff: { type: 'boolean' },
      'allow-downgrade': { type: 'boolean' },
      'known-hosts': { type: 'string' },
      'insecure-host-keys': { type: 'boolean' },
      json: { type: 'boolean' },
      verbose: { type: 'boolean', short: 'v' },
      ...storeOptions,
    });
    if (positionals.length !== 1) throw new KilnError('kiln apply takes one release, name@version', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const logger = createLogger({ verbose: values.verbose });
    const store = await storeFromFlags(values);
    const resolved = await store.resolve(positionals[0]);
    const entry = await store.entry(`${resolved.name}@${resolved.version}`);
    const rec = entry.record;
    if (!rec.template) throw new KilnError(`release ${resolved.name}@${resolved.version} does not record its kiln.yaml path`);
    const hosts = (values.host ?? []).map((h) => parseHost(h, { port: values.port ? Number(values.port) : undefined }));
    const isTTY = Boolean(process.stderr.isTTY);
    logger.info(`applying ${rec.name}@${rec.version} (commit ${rec.git.commit.slice(0, 12)})${values.check ? ' in check mode: nothing will change' : ''}`);
    const outcomes = await applyRelease({
      release: { name: rec.name, version: rec.version, commit: rec.git.commit, tag: rec.git.tag, template: rec.template, sourceDateEpoch: rec.sourceDateEpoch },
      repoDir: await repoRoot(process.cwd()),
      hosts, inventory: values.inventory, keyFile: values.key, check: Boolean(values.check), diff: Boolean(values.diff),
      allowDowngrade: Boolean(values['allow-downgrade']), knownHosts: values['known-hosts'], insecureHostKeys: Boolean(values['insecure-host-keys']),
      logger,
      onStatus: (s) => { if (isTTY) process.stderr.write(`\r\x1b[K  ${s.slice(0, 100)}`); else if (values.verbose) logger.info(`  ${s}`); },
    });
    if (isTTY) process.stderr.write('\r\x1b[K');
    printOutcomes(outcomes, logger.info, Boolean(values.diff));
    if (values.json) process.stdout.write(JSON.stringify({ release: `${rec.name}@${rec.version}`, check: Boolean(values.check), hosts: outcomes }, null, 2) + '\n');
    return outcomes.some((o) => o.status === 'failed') ? 1 : 0;
  },
};

function printOutcomes(outcomes: HostOutcome[], info: (m: string) => void, diff: boolean): void {
  for (const o of outcomes) {
    const t = o.totals;
    info(`${o.host}: ${o.status} (${o.from ?? 'unknown'} -> ${o.to})${t ? `  ok=${t.ok} changed=${t.changed} failed=${t.failures} unreachable=${t.unreachable}` : ''}`);
    for (const c of o.changed) info(`    ${o.status === 'drift' ? 'would change' : 'changed'}: ${c}`);
    for (const f of o.failed) info(`    failed: ${f}`);
    if (diff) {
      for (const d of o.diffs ?? []) {
        for (const part of ([] as { before?: string; after?: string; before_header?: string; after_header?: string }[]).concat(d.diff as never)) {
          if (part && (part.before !== undefined || part.after !== undefined)) info(`    --- ${part.before_header ?? 'before'}\n    +++ ${part.after_header ?? 'after'}\n${indentDiff(String(part.before ?? ''), String(part.after ?? ''))}`);
        }
      }
    }
  }
}

function indentDiff(before: string, after: string): string {
  const b = before.split('\n');
  const a = after.split('\n');
  const out: string[] = [];
  for (const l of b) if (!a.includes(l)) out.push(`    -${l}`);
  for (const l of a) if (!b.includes(l)) out.push(`    +${l}`);
  return out.join('\n');
}
