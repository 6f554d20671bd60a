import { KilnError } from '../errors.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'Check a release: every digest (artifacts streamed), its signatures, who signed it',
  usage: `kiln verify name@version [--json] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...storeOptions, json: { type: 'boolean', description: 'Print the verification as JSON on stdout' } });
    if (positionals.length !== 1) throw new KilnError('kiln verify takes one release reference', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const store = await storeFromFlags(values);
    const r = await store.verify(positionals[0]);
    if (values.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    } else {
      const out: string[] = [`${r.name}@${r.version} ${r.digest}`];
      for (const c of r.checked) out.push(`  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.what}  ${c.digest}${c.problem ? `\n        ${c.problem}` : ''}`);
      if (!r.signatures.length) out.push('  unsigned');
      for (const s of r.signatures) out.push(`  ${s.valid ? (s.trusted ? 'signed by' : 'signed (key not trusted) by') : 'BAD signature claiming'} ${s.signer}${s.problem ? ` (${s.problem})` : ''}`);
      if (r.revoked) out.push(`  revoked at ${r.revoked.time}: ${r.revoked.reason}`);
      if (!r.sourceVerified) out.push('  built from an UNVERIFIED source (kiln.yaml source.debian.verify or source.image.verify: false)');
      process.stdout.write(out.join('\n') + '\n');
    }
    if (!r.ok) process.stderr.write(`error: ${r.name}@${r.version} failed verification\n`);
    return r.ok ? 0 : 1;
  },
};
