import { KilnError, reportError } from '../errors.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import { signedByLine } from '../store/policy.js';
import type { Resolved } from '../store/index.js';
import { parse, type Command } from './command.js';

/** Terraform's external data source wants a flat object of strings. */
export function terraformResult(r: Resolved): Record<string, string> {
  const out: Record<string, string> = {
    name: r.name, version: r.version, digest: r.digest, reference: r.reference, commit: r.commit,
    source_date_epoch: String(r.sourceDateEpoch), channel: r.channel ?? '', signers: r.signers.join(', '),
    formats: r.artifacts.map((a) => a.format).join(','), revoked: r.revoked ? 'true' : 'false', source_verified: r.sourceVerified ? 'true' : 'false',
    metadata_signer: r.metadataSigner ?? '',
    revoked_ancestor: r.revokedAncestor ? `${r.revokedAncestor.name}@${r.revokedAncestor.version}` : '',
  };
  if (r.artifact) Object.assign(out, { format: r.artifact.format, file: r.artifact.file, location: r.artifact.location, sha256: r.artifact.sha256, size: String(r.artifact.size) });
  for (const a of r.artifacts) out[`location_${a.format}`] = a.location;
  for (const [cloud, ids] of Object.entries(r.cloudIds)) for (const [region, id] of Object.entries(ids)) out[`${cloud}_${region}`] = id;
  return out;
}

/** The cloud image id of a resolved release in one region (or its only region), or a KilnError saying where it is published. */
export function cloudImageId(r: Resolved, cloud: string, region?: string): { region: string; id: string } {
  const ids = r.cloudIds[cloud] ?? {};
  const regions = Object.keys(ids).sort();
  const where = regions.length ? `it is published to ${cloud} in ${regions.join(', ')}` : `it is not published to ${cloud}`;
  if (!region) {
    if (regions.length === 1) return { region: regions[0], id: ids[regions[0]] };
    throw new KilnError(`${r.name}@${r.version}: ${regions.length ? 'name a region' : where}`, { hint: regions.length ? `${where}: pass --region` : `kiln publish ${r.name}@${r.version} --to ${cloud} --region <region>` });
  }
  const id = ids[region];
  if (!id) throw new KilnError(`${r.name}@${r.version} has no ${cloud} image in ${region}: ${where}`, { hint: `kiln publish ${r.name}@${r.version} --to ${cloud} --region ${region}` });
  return { region, id };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function terraform(): Promise<number> {
  // The protocol: a JSON object of strings on stdin, a flat JSON object of strings on stdout,
  // any error on stderr with a non-zero exit (Terraform shows stderr to the user).
  try {
    const q = JSON.parse((await readStdin()) || '{}') as Record<string, string>;
    if (!q.release) throw new KilnError('the query needs "release": "name@version"');
    for (const [k, v] of Object.entries(q)) if (typeof v !== 'string') throw new KilnError(`query key "${k}" must be a string (Terraform's external data source passes strings)`);
    const bool = (k: string) => {
      if (q[k] === undefined || q[k] === '' || q[k] === 'false') return false;
      if (q[k] === 'true') return true;
      throw new KilnError(`query key "${k}" must be "true" or "false", not "${q[k]}"`);
    };
    const trustKeys = (q.trust_keys ?? '').split(',').map((k) => k.trim()).filter(Boolean);
    const store = await storeFromFlags({ store: q.store || undefined, insecure: bool('insecure'), 'require-signature': bool('require_signature'), 'trust-key': trustKeys });
    const r = await store.resolve(q.release, { format: q.format || undefined, force: bool('force') });
    const out = terraformResult(r);
    // With a cloud (and region), image_id is the one id Terraform launches from; an error when there is none.
    if (q.cloud) {
      const c = cloudImageId(r, q.cloud, q.region || undefined);
      Object.assign(out, { cloud: q.cloud, region: c.region, image_id: c.id });
    }
    process.stdout.write(JSON.stringify(out) + '\n');
    return 0;
  } catch (e) {
    // Terraform shows stderr when the program exits non-zero; a bug is still a bug (exit 70, stack).
    return reportError(e, (t) => process.stderr.write(t), 'kiln resolve --terraform: ');
  }
}

export const resolveCommand: Command = {
  name: 'resolve',
  summary: 'Print where a release (name@version or name@channel) is: artifact path or registry reference, and cloud ids',
  usage: `kiln resolve name@version|name@channel [--format F | --cloud aws|azure|gce [--region R (gce: the project)]] [--json] [--force] ${STORE_USAGE} | kiln resolve --terraform (query: release, store, format, cloud, region, require_signature, trust_keys, force, insecure)`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...storeOptions, format: { type: 'string', description: 'Which artifact: raw, qcow2, vmdk, vhd, vhdx, ova or gce (default: raw)', value: 'F' }, json: { type: 'boolean', description: 'Print everything known of the release as JSON on stdout' }, force: { type: 'boolean', description: 'Resolve a revoked release (or one with a revoked ancestor) anyway, with a warning' }, terraform: { type: 'boolean', description: 'Terraform\'s external data source: a JSON query on stdin, a JSON object on stdout' }, cloud: { type: 'string', description: 'Print the cloud id instead of an artifact', value: 'aws|azure|gce' }, region: { type: 'string', description: 'The region of the AMI or gallery image (GCE: the project)', value: 'R' },
    });
    if (values.terraform) return terraform();
    if (positionals.length !== 1) throw new KilnError('kiln resolve takes one release reference', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const store = await storeFromFlags(values);
    if (values.cloud && values.format) throw new KilnError('--cloud and --format ask for different things: a cloud image id, or an artifact', { exitCode: 2 });
    if (values.region && !values.cloud) throw new KilnError('--region goes with --cloud', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const r = await store.resolve(positionals[0], { format: values.format, force: values.force, verifyArtifacts: !values.cloud });
    if (r.revoked) process.stderr.write(`warning: ${r.name}@${r.version} is revoked (${r.revoked.reason}); used because of --force\n`);
    if (r.revokedAncestor) process.stderr.write(`warning: ${r.name}@${r.version} is built on ${r.revokedAncestor.name}@${r.revokedAncestor.version}, which is revoked (${r.revokedAncestor.reason}); used because of --force\n`);
    if (r.ancestryProblem) process.stderr.write(`warning: ${r.name}@${r.version}: ${r.ancestryProblem}; used because of --force\n`);
    if (values.cloud) {
      const c = cloudImageId(r, values.cloud, values.region);
      if (values.json) process.stdout.write(JSON.stringify({ name: r.name, version: r.version, digest: r.digest, cloud: values.cloud, region: c.region, imageId: c.id }, null, 2) + '\n');
      else process.stdout.write(`${c.id}\n`);
      process.stderr.write(`${r.name}@${r.version}${r.channel ? ` (channel ${r.channel})` : ''} ${r.digest}: ${values.cloud} ${c.region} ${c.id}, ${signedByLine(r.signers, store.trust)}\n`);
      return 0;
    }
    if (values.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      return 0;
    }
    const lines: string[] = [];
    if (r.artifact) lines.push(r.artifact.location);
    else for (const a of r.artifacts) lines.push(`${a.format}\t${a.location}`);
    for (const [cloud, ids] of Object.entries(r.cloudIds)) for (const [region, id] of Object.entries(ids)) lines.push(`${cloud}\t${region}\t${id}`);
    process.stdout.write(lines.join('\n') + '\n');
    process.stderr.write(`${r.name}@${r.version}${r.channel ? ` (channel ${r.channel})` : ''} ${r.digest}, ${signedByLine(r.signers, store.trust)}\n`);
    if (!r.sourceVerified) process.stderr.write(`warning: ${r.name}@${r.version} was built from an UNVERIFIED source (source.debian.verify or source.image.verify: false)\n`);
    return 0;
  },
};
