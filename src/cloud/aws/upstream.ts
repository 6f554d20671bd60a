/**
 * An AMI as the trusted upstream (`source.image.url: ec2://<region>/<ami-id or name pattern>` with
 * `source.image.owner` pinned): the guide's "select a trusted upstream image, e.g. the AMI".
 *
 * The AMI is looked up in its region and must belong to the pinned owner account (a distribution's
 * publishing account): EC2 says who owns an image, over TLS and SigV4, and an image of any other
 * owner is refused. A name pattern picks the owner's newest matching image. No instance is launched:
 * the root snapshot is read through the EBS direct APIs (ListSnapshotBlocks, GetSnapshotBlock), each
 * block checked against the SHA-256 EBS sends with it, into a sparse raw disk. EBS reads only
 * snapshots of the caller's own account, so an AMI of another account is first copied into it
 * (CopyImage), read, and the copy deregistered with its snapshot, leaving nothing behind.
 * The disk's sha256/sha512 are then checked against kiln.yaml's and kiln.lock's pins like any vendor
 * image's, and kiln.lock pins them (`kiln lock`).
 */
import { createHash, randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { EBSClient, GetSnapshotBlockCommand, ListSnapshotBlocksCommand } from '@aws-sdk/client-ebs';
import { CopyImageCommand, DeleteSnapshotCommand, DeregisterImageCommand, DescribeImagesCommand, EC2Client, type Image } from '@aws-sdk/client-ec2';
import { KilnError } from '../../errors.js';
import { humanBytes, humanSeconds, type Logger } from '../../log.js';
import { call } from './publish.js';
import type { AmiRef } from './ami-url.js';

export { isAmiUrl, parseAmiUrl, type AmiRef } from './ami-url.js';

export interface AmiFound { imageId: string; name: string; ownerId: string; snapshotId: string; created: string; region: string }

/** The AMI the reference names, checked to belong to the pinned owner. */
export async function findAmi(ref: AmiRef, owner: string): Promise<AmiFound> {
  const ec2 = new EC2Client({ region: ref.region, maxAttempts: 6, retryMode: 'standard' });
  try {
    const r = await call('DescribeImages', ref.region, () => ec2.send(new DescribeImagesCommand(ref.id
      ? { ImageIds: [ref.id] }
      : { Owners: [owner], Filters: [{ Name: 'name', Values: [ref.namePattern ?? ''] }, { Name: 'state', Values: ['available'] }] })));
    const images = (r.Images ?? []).filter((i) => i.State === 'available' || i.State === undefined);
    const img: Image | undefined = ref.id ? images.find((i) => i.ImageId === ref.id) : images.sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? ''))[0];
    const shown = ref.id ?? `the newest image named ${ref.namePattern}`;
    if (!img?.ImageId) throw new KilnError(`${shown} is not available in ${ref.region}${ref.id ? '' : ` from owner ${owner}`}`, { hint: 'check the id or name pattern and the region in source.image.url' });
    if (img.OwnerId !== owner) {
      throw new KilnError(`${img.ImageId} in ${ref.region} belongs to account ${img.OwnerId ?? '(unknown)'}, not to ${owner} pinned in source.image.owner`, {
        hint: 'an AMI is trusted by who publishes it: use an image of the pinned account, or pin the account you trust',
      });
    }
    const root = img.BlockDeviceMappings?.find((m) => m.DeviceName === img.RootDeviceName) ?? img.BlockDeviceMappings?.[0];
    const snapshotId = root?.Ebs?.SnapshotId;
    if (!snapshotId) throw new KilnError(`${img.ImageId} has no EBS root snapshot (instance-store AMIs cannot be read)`);
    return { imageId: img.ImageId, name: img.Name ?? '', ownerId: img.OwnerId, snapshotId, created: img.CreationDate ?? '', region: ref.region };
  } finally {
    ec2.destroy();
  }
}

/**
 * Writes the AMI's root volume to dst as a sparse raw disk, every block checked. Copies a foreign
 * AMI into the account first and removes the copy afterwards.
 */
export async function readAmi(ami: AmiFound, dst: string, opts: { logger: Logger; onStatus?: (s: string) => void; waitSeconds?: number; pollMs?: number; parallel?: number }): Promise<{ blocks: number; bytes: number }> {
  const { region } = ami;
  const ec2 = new EC2Client({ region, maxAttempts: 6, retryMode: 'standard' });
  let copyId: string | undefined;
  try {
    const own = await call('DescribeImages', region, () => ec2.send(new DescribeImagesCommand({ Owners: ['self'], ImageIds: [ami.imageId] })));
    let snapshotId = ami.snapshotId;
    if (!own.Images?.length) {
      // EBS direct APIs read only the account's own snapshots: copy the AMI in, read the copy.
      opts.onStatus?.(`copying ${ami.imageId} into the account`);
      // A name and token of this run's own: a copy of another name is never read in its place (anyone
      // in the account could register one), and an earlier run's token would return its removed copy.
      const leftovers = await call('DescribeImages', region, () => ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'name', Values: [`kiln-upstream-${ami.imageId}-*`] }] })));
      for (const l of leftovers.Images ?? []) opts.logger.warn(`${l.ImageId} (${l.Name}) in ${region} looks left by an interrupted Kiln build reading ${ami.imageId}: Kiln does not use it; deregister it and delete its snapshot`);
      const nonce = randomBytes(8).toString('hex');
      const token = createHash('sha256').update(`kiln-upstream\0${ami.imageId}\0${region}\0${nonce}`).digest('hex').slice(0, 64);
      const c = await call('CopyImage', region, () => ec2.send(new CopyImageCommand({ SourceImageId: ami.imageId, SourceRegion: region, Name: `kiln-upstream-${ami.imageId}-${nonce}`, ClientToken: token, Description: `Kiln: a copy of ${ami.imageId} (${ami.name}) to read its disk; removed once read` })));
      if (!c.ImageId) throw new KilnError(`CopyImage of ${ami.imageId} in ${region} returned no image id`);
      copyId = c.ImageId;
      const limit = (opts.waitSeconds ?? 1800) * 1000;
      const t0 = Date.now();
      let delay = opts.pollMs ?? 5000;
      for (;;) {
        const d = await call('DescribeImages', region, () => ec2.send(new DescribeImagesCommand({ ImageIds: [c.ImageId ?? ''] })));
        const img = d.Images?.[0];
        const snap = img?.BlockDeviceMappings?.find((m) => m.DeviceName === img.RootDeviceName)?.Ebs?.SnapshotId ?? img?.BlockDeviceMappings?.[0]?.Ebs?.SnapshotId;
        if (img?.State === 'available' && snap) { snapshotId = snap; break; }
        if (img?.State === 'failed' || img?.State === 'error') throw new KilnError(`the copy ${c.ImageId} of ${ami.imageId} failed: ${img.StateReason?.Message ?? img.State}`);
        if (Date.now() - t0 > limit) throw new KilnError(`the copy ${c.ImageId} of ${ami.imageId} is still ${img?.State ?? 'missing'} after ${humanSeconds(limit)}`, { hint: `build again later, and deregister ${c.ImageId} if it stays` });
        await new Promise((res) => setTimeout(res, delay));
        delay = Math.min(delay * 2, 30_000);
      }
    }
    return await readSnapshot(region, snapshotId, dst, opts);
  } finally {
    // The copy goes, read or not (a failed or interrupted read included), with its snapshot.
    if (copyId) {
      const id = copyId;
      try {
        const d = await ec2.send(new DescribeImagesCommand({ ImageIds: [id] })).catch(() => undefined);
        const snaps = (d?.Images?.[0]?.BlockDeviceMappings ?? []).map((m) => m.Ebs?.SnapshotId).filter((x): x is string => Boolean(x));
        await ec2.send(new DeregisterImageCommand({ ImageId: id }));
        for (const snap of snaps) await ec2.send(new DeleteSnapshotCommand({ SnapshotId: snap }));
      } catch (e) {
        opts.logger.warn(`could not remove the copy ${id} made to read ${ami.imageId}: ${(e as Error).message}; deregister it and delete its snapshot by hand`);
      }
    }
    ec2.destroy();
  }
}

async function readSnapshot(region: string, snapshotId: string, dst: string, opts: { logger: Logger; onStatus?: (s: string) => void; parallel?: number }): Promise<{ blocks: number; bytes: number }> {
  const ebs = new EBSClient({ region, maxAttempts: 6, retryMode: 'standard' });
  const out = await open(dst, 'wx', 0o644);
  try {
    const blocks: { index: number; token: string }[] = [];
    let volumeBytes = 0;
    let blockSize = 0;
    let next: string | undefined;
    do {
      const page = await call('ListSnapshotBlocks', region, () => ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 10000, NextToken: next })));
      volumeBytes = (page.VolumeSize ?? 0) * 1024 ** 3;
      blockSize = page.BlockSize ?? 0;
      for (const b of page.Blocks ?? []) if (b.BlockIndex !== undefined && b.BlockToken) blocks.push({ index: b.BlockIndex, token: b.BlockToken });
      next = page.NextToken;
    } while (next);
    if (!volumeBytes || blockSize <= 0 || volumeBytes % blockSize) throw new KilnError(`snapshot ${snapshotId} in ${region}: volume ${volumeBytes} bytes, block size ${blockSize}: not a whole number of blocks`);
    await out.truncate(volumeBytes);
    const t0 = Date.now();
    let done = 0;
    const parallel = Math.max(1, opts.parallel ?? 16);
    let failure: unknown;
    const work = blocks.slice();
    const worker = async () => {
      while (work.length && failure === undefined) {
        const b = work.shift();
        if (!b) break;
        if (b.index < 0 || (b.index + 1) * blockSize > volumeBytes) throw new KilnError(`snapshot ${snapshotId}: block ${b.index} is outside its ${humanBytes(volumeBytes)} volume`);
        const r = await call(`GetSnapshotBlock ${b.index}`, region, () => ebs.send(new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: b.index, BlockToken: b.token })));
        const data = Buffer.from(await (r.BlockData?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
        if (data.length !== blockSize || (r.DataLength !== undefined && r.DataLength !== blockSize)) throw new KilnError(`snapshot ${snapshotId}: block ${b.index} is ${data.length} bytes, expected ${blockSize}`);
        const sum = createHash('sha256').update(data).digest('base64');
        if (r.ChecksumAlgorithm !== 'SHA256' || r.Checksum !== sum) throw new KilnError(`snapshot ${snapshotId}: block ${b.index} does not match the checksum EBS sent with it (${r.Checksum ?? 'none'}, ${r.ChecksumAlgorithm ?? 'no algorithm'})`, { hint: 'nothing was used; build again' });
        await out.write(data, 0, data.length, b.index * blockSize);
        if (++done % 200 === 0) opts.onStatus?.(`read ${done}/${blocks.length} blocks of ${snapshotId}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, Math.max(1, blocks.length)) }, () => worker().catch((e: unknown) => { failure ??= e; })));
    if (failure !== undefined) throw failure;
    await out.sync();
    opts.logger.info(`read ${blocks.length} blocks (${humanBytes(blocks.length * blockSize)}) of ${snapshotId} in ${humanSeconds(Date.now() - t0)}, every block checked`);
    return { blocks: blocks.length, bytes: blocks.length * blockSize };
  } finally {
    await out.close();
    ebs.destroy();
  }
}
