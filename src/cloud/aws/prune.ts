/**
 * Retention for AMIs Kiln published (`kiln prune --cloud aws`): a dry run unless told to apply.
 * Only AMIs owned by the account and tagged `kiln:image=<name>` are looked at, so nothing Kiln did not
 * create is ever touched. An AMI is kept when its version is among the newest N releases of the image
 * in the store, when a channel points at it, when it is younger than D days, or when its version is
 * not in the store at all (Kiln cannot place it, so it leaves it). Otherwise it is deregistered and
 * the snapshots it was made of are deleted (DeregisterImage alone leaves them, and they cost money),
 * and its id is removed from the release's signed metadata.
 */
import { EC2Client, DeregisterImageCommand, DeleteSnapshotCommand, DescribeImagesCommand, type Image } from '@aws-sdk/client-ec2';
import { KilnError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ReleaseStore } from '../../store/release-store.js';
import { awsError, TAG } from './publish.js';

export interface PruneRule { keep: number; keepDays: number }

export interface PruneDecision {
  region: string;
  imageId: string;
  name: string;
  version: string;
  created: string;
  snapshots: string[];
  action: 'keep' | 'delete';
  why: string;
}

/** The decision for one image's AMIs (pure: the releases' order and channels come from the store). */
export function decide(images: { region: string; image: Image }[], releases: { version: string; date: string }[], channelTargets: Map<string, string[]>, rule: PruneRule, now: Date): PruneDecision[] {
  const newest = [...releases].sort((a, b) => b.date.localeCompare(a.date) || b.version.localeCompare(a.version, undefined, { numeric: true })).slice(0, rule.keep).map((r) => r.version);
  const known = new Set(releases.map((r) => r.version));
  return images.map(({ region, image }) => {
    const version = image.Tags?.find((t) => t.Key === TAG.version)?.Value ?? '';
    const created = image.CreationDate ?? '';
    const ageDays = created ? (now.getTime() - Date.parse(created)) / 86_400_000 : 0;
    const base = {
      region, imageId: image.ImageId ?? '', name: image.Name ?? '', version, created,
      snapshots: (image.BlockDeviceMappings ?? []).map((m) => m.Ebs?.SnapshotId).filter((s): s is string => Boolean(s)),
    };
    const channels = channelTargets.get(version);
    if (!known.has(version)) return { ...base, action: 'keep' as const, why: 'its version is not in the store' };
    if (channels?.length) return { ...base, action: 'keep' as const, why: `channel ${channels.join(', ')}` };
    if (newest.includes(version)) return { ...base, action: 'keep' as const, why: `among the newest ${rule.keep}` };
    if (rule.keepDays > 0 && ageDays < rule.keepDays) return { ...base, action: 'keep' as const, why: `younger than ${rule.keepDays} days` };
    return { ...base, action: 'delete' as const, why: `older than the newest ${rule.keep}${rule.keepDays > 0 ? ` and ${rule.keepDays} days` : ''}, on no channel` };
  });
}

export async function pruneAws(store: ReleaseStore, name: string, opts: { regions: string[]; rule: PruneRule; apply: boolean; logger: Logger; now?: Date }): Promise<PruneDecision[]> {
  if (!opts.regions.length) throw new KilnError('no AWS region to prune', { hint: 'pass --region, or set publish.aws.regions in kiln.yaml', exitCode: 2 });
  if (!Number.isInteger(opts.rule.keep) || opts.rule.keep < 1) throw new KilnError('prune keeps at least the newest release: --keep must be 1 or more', { exitCode: 2 });
  const releases = (await store.list(name)).map((r) => ({ version: r.version, date: r.date }));
  const channelTargets = new Map<string, string[]>();
  for (const c of await store.channelList(name)) channelTargets.set(c.version, [...(channelTargets.get(c.version) ?? []), c.channel]);
  const found: { region: string; image: Image }[] = [];
  for (const region of opts.regions) {
    const ec2 = new EC2Client({ region, maxAttempts: 6, retryMode: 'standard' });
    try {
      const r = await ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: `tag:${TAG.image}`, Values: [name] }] })).catch((e: unknown) => { throw awsError(e, 'DescribeImages', region); });
      // Belt and braces: the filter is AWS's; the tag is checked here too.
      for (const image of r.Images ?? []) if (image.Tags?.some((t) => t.Key === TAG.image && t.Value === name) && image.Tags.some((t) => t.Key === TAG.digest)) found.push({ region, image });
    } finally {
      ec2.destroy();
    }
  }
  const plan = decide(found, releases, channelTargets, opts.rule, opts.now ?? new Date());
  if (!opts.apply) return plan;
  for (const d of plan.filter((x) => x.action === 'delete')) {
    const ec2 = new EC2Client({ region: d.region, maxAttempts: 6, retryMode: 'standard' });
    try {
      await ec2.send(new DeregisterImageCommand({ ImageId: d.imageId })).catch((e: unknown) => { throw awsError(e, `DeregisterImage ${d.imageId}`, d.region); });
      for (const s of d.snapshots) await ec2.send(new DeleteSnapshotCommand({ SnapshotId: s })).catch((e: unknown) => { throw awsError(e, `DeleteSnapshot ${s}`, d.region); });
      opts.logger.info(`aws ${d.region}: deregistered ${d.imageId} (${d.name}) and deleted ${d.snapshots.join(', ') || 'no snapshot'}`);
      await store.removeCloudIds(name, d.version, 'aws', { [d.region]: d.imageId });
    } finally {
      ec2.destroy();
    }
  }
  return plan;
}
