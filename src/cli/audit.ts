import { statSync } from 'node:fs';
import { auditImage } from '../audit/image.js';
import { auditTree, formatFindings } from '../audit/tree.js';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { findTemplate, loadTemplate } from '../template/load.js';
import { parse, type Command } from './command.js';

export const auditCommand: Command = {
  name: 'audit',
  summary: 'Inspect a disk image (or a root tree) without booting it: leftovers of the seal and secrets',
  usage: 'kiln audit <image|dir> [--format raw|qcow2|vmdk|vpc|vhdx] [--json] [--disable op,...] [--keep path]... [--accept fingerprint]... [--file kiln.yaml] [--verbose]',
  async run(argv) {
    const { values, positionals } = parse('audit', this.usage, argv, {
      format: { type: 'string' }, json: { type: 'boolean' }, disable: { type: 'string', multiple: true },
      keep: { type: 'string', multiple: true }, accept: { type: 'string', multiple: true }, file: { type: 'string', short: 'f' }, verbose: { type: 'boolean', short: 'v' },
    });
    if (positionals.length !== 1) throw new KilnError('kiln audit: expected one image (or directory)', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const target = positionals[0];
    const config = values.file ? loadTemplate(findTemplate(values.file)).config : undefined;
    const seal = config?.seal ?? { disable: [], keep: [] };
    const accept = [...(config?.audit.accept ?? []), ...(values.accept ?? [])];
    const disable = [...seal.disable, ...(values.disable ?? []).flatMap((d) => d.split(',')).map((d) => d.trim()).filter(Boolean)];
    const keep = [...seal.keep, ...(values.keep ?? [])];
    const logger = createLogger({ verbose: values.verbose });
    let isDir = false;
    try { isDir = statSync(target).isDirectory(); } catch { /* auditImage names the missing file */ }
    const findings = isDir
      ? await auditTree(target, { disable, keep, accept, logger })
      : await auditImage(target, { disable, keep, accept, logger, format: values.format });
    if (values.json) {
      process.stdout.write(JSON.stringify({ target, clean: findings.length === 0, disabled: disable, keep, accept, findings }, null, 2) + '\n');
    } else {
      process.stdout.write(formatFindings(findings));
      process.stderr.write(findings.length ? `${target}: ${findings.length} finding(s)\n` : `${target}: clean\n`);
    }
    return findings.length ? 1 : 0;
  },
};
