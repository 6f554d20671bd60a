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
    const { values, positionals } = parse(this, argv, {
      format: { type: 'string', description: 'The disk format as qemu-img names it (default: detected)', value: 'raw|qcow2|vmdk|vpc|vhdx' }, json: { type: 'boolean', description: 'Print the findings as JSON on stdout' }, disable: { type: 'string', multiple: true, description: 'Seal operations not to check (comma-separated, see kiln seal --list)', value: 'op,...' },
      keep: { type: 'string', multiple: true, description: 'A path the image ships on purpose, not a finding', value: 'PATH' }, accept: { type: 'string', multiple: true, description: 'The fingerprint of a secret finding shipped on purpose', value: 'FINGERPRINT' }, file: { type: 'string', short: 'f', description: 'Take disable, keep and accept from this kiln.yaml\'s seal and audit settings', value: 'kiln.yaml' }, verbose: { type: 'boolean', short: 'v', description: 'Show the commands run' },
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
