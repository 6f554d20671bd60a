/**
 * Retention for AMIs Kiln published (`kiln prune --cloud aws`): a dry run unless told to apply.
 * Only AMIs owned by the account and tagged `kiln:image=<name>` are looked at, so nothing Kiln did not
 * create is ever touched. The rule is src/cloud/retention.ts's. An AMI outside it is deregistered and
 * the snapshots it was made of are deleted (DeregisterImage alone leaves them, and they cost money),
 * and its id is removed from the release's signed metadata.
 */
import { EC2Client, DeregisterImageCommand, DeleteSnapshotCommand, DescribeImagesCommand, type Image } from '@aws-sdk/client-ec2';
import { KilnError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ReleaseStore } from '../../store/release-store.js';
import { call, TAG } from './publish.js';
import { retention, storeFacts, type PruneRule, type StoreFacts } from '../retention.js';

export type { PruneRule };

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

/** The decision for one image's AMIs. */
export function decide(images: { region: string; image: Image }[], facts: StoreFacts, rule: PruneRule, now: Date): PruneDecision[] {
  return images.map(({ region, image }) => {
    const version = image.Tags?.find((t) => t.Key === TAG.version)?.Value ?? '';
    const created = image.CreationDate ?? '';
    return {
      region, imageId: image.ImageId ?? '', name: image.Name ?? '', version, created,
      snapshots: (image.BlockDeviceMappings ?? []).map((m) => m.Ebs?.SnapshotId).filter((s): s is string => Boolean(s)),
      ...retention({ version, created }, facts, rule, now),
    };
  });
}

export async function pruneAws(store: ReleaseStore, name: string, opts: { regions: string[]; rule: PruneRule; apply: boolean; logger: Logger; now?: Date }): Promise<PruneDecision[]> {
  if (!opts.regions.length) throw new KilnError('no AWS region to prune', { hint: 'pass --region, or set publish.aws.regions in kiln.yaml', exitCode: 2 });
  const facts = await storeFacts(store, name, opts.rule);
  const found: { region: string; image: Image }[] = [];
  for (const region of opts.regions) {
    const ec2 = new EC2Client({ region, maxAttempts: 6, retryMode: 'standard' });
    try {
      const r = await call('DescribeImages', region, () => ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: `tag:${TAG.image}`, Values: [name] }] })));
      // Belt and braces: the filter is AWS's; the tag is checked here too.
      for (const image of r.Images ?? []) if (image.Tags?.some((t) => t.Key === TAG.image && t.Value === name) && image.Tags.some((t) => t.Key === TAG.digest)) found.push({ region, image });
    } finally {
      ec2.destroy();
    }
  }
  const plan = decide(found, facts, opts.rule, opts.now ?? new Date());
  if (!opts.apply) return plan;
  for (const d of plan.filter((x) => x.action === 'delete')) {
    const ec2 = new EC2Client({ region: d.region, maxAttempts: 6, retryMode: 'standard' });
    try {
      await call(`DeregisterImage ${d.imageId}`, d.region, () => ec2.send(new DeregisterImageCommand({ ImageId: d.imageId })));
      for (const s of d.snapshots) await call(`DeleteSnapshot ${s}`, d.region, () => ec2.send(new DeleteSnapshotCommand({ SnapshotId: s })));
      opts.logger.info(`aws ${d.region}: deregistered ${d.imageId} (${d.name}) and deleted ${d.snapshots.join(', ') || 'no snapshot'}`);
      await store.removeCloudIds(name, d.version, 'aws', { [d.region]: d.imageId });
    } finally {
      ec2.destroy();
    }
  }
  return plan;
}
