/**
 * A release as an AMI, without launching anything and without an S3 bucket or an import role: the
 * release's raw disk becomes an EBS snapshot through the EBS direct APIs (StartSnapshot,
 * PutSnapshotBlock, CompleteSnapshot: what AWS's own coldsnap does), then RegisterImage makes the AMI;
 * CopyImage carries it to the other regions. Every AMI and snapshot is tagged with the image name, the
 * version (`ImageVersion`, the guide's lookup key), the release digest and the commit, and the AMI ids
 * are recorded in the image's signed metadata (`kiln resolve --cloud aws`).
 *
 * Trust: the disk is read from the store once; each block's SHA-256 goes to EBS with it, and the whole
 * file's sha256 is compared with the release's digest before the snapshot is completed, so an AMI is
 * only ever made of the bytes the release names. Credentials come from the SDK's default chain
 * (environment, profiles, SSO, instance roles); Kiln never reads, logs or records them, and starts no
 * process here.
 *
 * Idempotent: an AMI of this name whose digest tag is the release's is recorded and nothing is
 * uploaded; an AMI of this name with another digest is an error. An interrupted upload is resumed by
 * the next run (the same ClientToken returns the same pending snapshot and every block is put again);
 * snapshots of this release that no AMI uses are deleted once the AMI exists. An AMI is registered only
 * from a completed snapshot, so no half image is ever registered.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EBSClient, StartSnapshotCommand, PutSnapshotBlockCommand, CompleteSnapshotCommand, type StartSnapshotCommandOutput } from '@aws-sdk/client-ebs';
import {
  EC2Client, DescribeImagesCommand, DescribeSnapshotsCommand, RegisterImageCommand, CopyImageCommand, DeleteSnapshotCommand,
  type Image, type Snapshot, type Tag,
} from '@aws-sdk/client-ec2';
import { KilnError } from '../../errors.js';
import { humanBytes, humanSeconds, type Logger } from '../../log.js';
import type { ReleaseStore } from '../../store/release-store.js';
import { blockChecksum, checkAmiName, diskBlocks, EBS_BLOCK, linearAggregate, volumeSizeGiB } from './snapshot-blocks.js';
import { checkFit, FIX_HINT, type BootMode, type Fitness } from '../fitness.js';

/** Tag keys Kiln puts on what it creates; `kiln prune --cloud aws` touches nothing without them. */
export const TAG = { version: 'ImageVersion', name: 'Name', image: 'kiln:image', digest: 'kiln:release-digest', commit: 'kiln:commit' } as const;

export interface AwsPublishOptions {
  /** The first region gets the upload; the others a CopyImage of it. */
  regions: string[];
  /** Default: from the disk (BIOS + UEFI: uefi-preferred). */
  bootMode?: BootMode;
  /** PutSnapshotBlock requests in flight at once. */
  parallel?: number;
  /** The longest Kiln waits for a snapshot to complete or a copied AMI to become available. */
  waitSeconds?: number;
  logger: Logger;
  signal?: AbortSignal;
  /** For tests: how often to poll (ms). */
  pollMs?: number;
}

export interface AwsPublished {
  region: string;
  imageId: string;
  /** True when the AMI was already there (same name, same release digest): nothing was uploaded. */
  existing: boolean;
  snapshotId?: string;
  upload?: { blocks: number; skipped: number; bytes: number; seconds: number };
}

export interface ReleaseToPublish {
  name: string;
  version: string;
  digest: string;
  commit: string;
  rawFile: string;
  rawSha256: string;
  rawSize: number;
  architecture: 'x86_64' | 'arm64';
  bootMode: BootMode;
}

/** Resolves the release (trust policy, revocations, ancestry), checks it is fit for EC2, and publishes it. */
export async function publishReleaseToAws(store: ReleaseStore, ref: string, opts: AwsPublishOptions): Promise<AwsPublished[]> {
  if (!opts.regions.length) throw new KilnError('no AWS region to publish to', { hint: 'pass --region, or set publish.aws.regions in kiln.yaml' });
  return publishToAws(store, await releaseForAws(store, ref, opts.bootMode, opts.logger), opts);
}

/** What an AMI is made of: the resolved release, its raw disk, and what the disk supports (refused when unfit for EC2). */
export async function releaseForAws(store: ReleaseStore, ref: string, bootMode: BootMode | undefined, logger: Logger): Promise<ReleaseToPublish> {
  // Not hashed here: the upload hashes the very bytes it sends and compares them with the release's digest.
  const r = await store.resolve(ref, { format: 'raw', verifyArtifacts: false });
  const raw = r.artifact;
  if (!raw) throw new KilnError(`${ref} has no raw artifact`, { hint: 'an AMI is made from the raw disk: add raw to formats in kiln.yaml and release a new version' });
  if (store.backend.remote) throw new KilnError(`${ref} is in a remote store: pull it first`, { hint: `kiln pull ${ref} --from <store>` });
  const e = await store.entry(`${r.name}@${r.version}`);
  const scratch = mkdtempSync(join(tmpdir(), 'kiln-publish-'));
  let fit: Fitness;
  try {
    fit = await checkFit(raw.location, 'ec2', scratch, logger);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (fit.problems.length) {
    throw new KilnError(`${r.name}@${r.version} is not fit for EC2`, { detail: fit.problems.join('\n'), hint: FIX_HINT.ec2 });
  }
  if (bootMode && bootMode !== 'legacy-bios' && fit.bootMode === 'legacy-bios') {
    throw new KilnError(`boot mode ${bootMode} asked for, but the disk of ${r.name}@${r.version} has no EFI system partition`, { hint: 'set disk.firmware to [bios, uefi] in kiln.yaml, or publish with boot mode legacy-bios' });
  }
  if (bootMode && bootMode !== 'uefi' && fit.bootMode === 'uefi') {
    throw new KilnError(`boot mode ${bootMode} asked for, but the disk of ${r.name}@${r.version} has no BIOS boot partition`, { hint: 'publish with boot mode uefi, or set disk.firmware to [bios, uefi]' });
  }
  return {
    name: r.name, version: r.version, digest: r.digest, commit: r.commit,
    rawFile: raw.location, rawSha256: raw.sha256, rawSize: raw.size,
    architecture: architectureOf(e.record.source.packages ?? []),
    bootMode: bootMode ?? fit.bootMode,
  };
}

/** Uploads and registers in the first region, copies to the others, and records every AMI id on the release. */
export async function publishToAws(store: ReleaseStore, rel: ReleaseToPublish, opts: AwsPublishOptions): Promise<AwsPublished[]> {
  const out: AwsPublished[] = [];
  const [first, ...others] = opts.regions;
  const ref = `${rel.name}@${rel.version}`;
  const primary = await publishInRegion(rel, first, opts);
  out.push(primary);
  await store.addCloudIds(ref, { aws: { [first]: primary.imageId } });
  for (const region of others) {
    const copy = await copyToRegion(rel, primary.imageId, first, region, opts);
    out.push(copy);
    await store.addCloudIds(ref, { aws: { [region]: copy.imageId } });
  }
  return out;
}

export function amiName(rel: { name: string; version: string }): string {
  return checkAmiName(`${rel.name}-${rel.version}`);
}

export function releaseTags(rel: Pick<ReleaseToPublish, 'name' | 'version' | 'digest' | 'commit'>): Tag[] {
  return [
    { Key: TAG.name, Value: amiName(rel) },
    { Key: TAG.version, Value: rel.version },
    { Key: TAG.image, Value: rel.name },
    { Key: TAG.digest, Value: rel.digest },
    { Key: TAG.commit, Value: rel.commit },
  ];
}

function architectureOf(packages: { name: string; arch: string }[]): 'x86_64' | 'arm64' {
  const arches = new Set(packages.map((p) => p.arch).filter((a) => a !== 'all'));
  if (arches.has('arm64') && !arches.has('amd64')) return 'arm64';
  if (arches.size > 1 && !arches.has('amd64')) throw new KilnError(`cannot tell the image's architecture from its packages (${[...arches].join(', ')})`);
  return 'x86_64';
}

const tagOf = (tags: Tag[] | undefined, key: string) => tags?.find((t) => t.Key === key)?.Value;

function clients(region: string): { ebs: EBSClient; ec2: EC2Client } {
  // The SDK's default credential chain and its standard retry mode (exponential backoff with jitter
  // on throttling and 5xx); AWS_ENDPOINT_URL(_EBS/_EC2) are honoured by the SDK itself.
  const common = { region, maxAttempts: 6, retryMode: 'standard' };
  return { ebs: new EBSClient(common), ec2: new EC2Client(common) };
}

/** An AWS API call whose failure names the call, the region and what to do. */
export async function call<T>(what: string, region: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw awsError(e, what, region);
  }
}

export function awsError(e: unknown, what: string, region: string): unknown {
  if (e instanceof KilnError || !(e instanceof Error)) return e;
  const code = (e as { Code?: string; name?: string }).Code ?? e.name;
  const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  if (!status && !/Exception$|^Invalid|^Unauthorized|^AccessDenied|Credential/.test(code ?? '')) {
    if (/credential/i.test(e.message)) return new KilnError(`${what} in ${region}: no AWS credentials (${e.message})`, { hint: 'set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance role applies (the SDK\'s default chain)' });
    if ((e as NodeJS.ErrnoException).code === 'ECONNREFUSED' || /ENOTFOUND|ECONNRESET|ETIMEDOUT/.test(e.message)) return new KilnError(`${what} in ${region}: ${e.message}`, { hint: 'check the network (and AWS_ENDPOINT_URL if set)' });
    return e; // not an AWS answer: a bug until shown otherwise
  }
  const hint = /UnauthorizedOperation|AccessDenied/i.test(code ?? '') ? `the credentials lack permission for ${what.split(' ')[0]} (ebs:StartSnapshot, ebs:PutSnapshotBlock, ebs:CompleteSnapshot, ec2:RegisterImage, ec2:DescribeImages, ec2:DescribeSnapshots, ec2:CopyImage, ec2:CreateTags, ec2:DeleteSnapshot)`
    : /LimitExceeded|Quota|RequestLimit/i.test(code ?? '') ? 'an account quota was reached: raise it in Service Quotas, or prune old AMIs (kiln prune --cloud aws)'
      : /BootMode|Tpm|Uefi/i.test(`${code} ${e.message}`) ? 'this region or account does not take that boot mode: set publish.aws.boot_mode (uefi, legacy-bios or uefi-preferred)'
        : /AuthFailure|SignatureDoesNotMatch|InvalidClientTokenId|ExpiredToken/i.test(code ?? '') ? 'the AWS credentials were refused: check the profile or keys and the clock'
          : undefined;
  return new KilnError(`${what} in ${region} failed: ${code ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${e.message}`, { hint });
}

async function findOwnImage(ec2: EC2Client, region: string, name: string): Promise<Image | undefined> {
  const r = await call('DescribeImages', region, () => ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'name', Values: [name] }] })));
  return r.Images?.[0];
}

async function publishInRegion(rel: ReleaseToPublish, region: string, opts: AwsPublishOptions): Promise<AwsPublished> {
  const log = opts.logger;
  const { ebs, ec2 } = clients(region);
  try {
    const name = amiName(rel);
    const existing = await findOwnImage(ec2, region, name);
    if (existing?.ImageId) return existingImage(existing, rel, region);

    const started = Date.now();
    const { snapshotId, upload } = await uploadSnapshot(ebs, ec2, rel, region, opts);
    await waitForSnapshot(ec2, region, snapshotId, opts);
    const reg = await call('RegisterImage', region, () => ec2.send(new RegisterImageCommand({
      Name: name,
      Description: `${rel.name} ${rel.version} (Kiln release ${rel.digest})`,
      Architecture: rel.architecture,
      VirtualizationType: 'hvm',
      RootDeviceName: '/dev/xvda',
      BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: snapshotId, VolumeSize: volumeSizeGiB(rel.rawSize), VolumeType: 'gp3', DeleteOnTermination: true } }],
      EnaSupport: true,
      ImdsSupport: 'v2.0',
      BootMode: rel.bootMode,
      // NitroTPM needs an AMI that always boots UEFI.
      ...(rel.bootMode === 'uefi' ? { TpmSupport: 'v2.0' } : {}),
      TagSpecifications: [{ ResourceType: 'image', Tags: releaseTags(rel) }],
    })));
    const imageId = reg.ImageId;
    if (!imageId) throw new KilnError(`RegisterImage in ${region} returned no image id`);
    log.info(`aws ${region}: ${imageId} registered (${name}, boot mode ${rel.bootMode}) in ${humanSeconds(Date.now() - started)}`);
    await deleteOrphanSnapshots(ec2, region, rel, snapshotId, log);
    return { region, imageId, existing: false, snapshotId, upload };
  } finally {
    ebs.destroy();
    ec2.destroy();
  }
}

function existingImage(img: Image, rel: ReleaseToPublish, region: string): AwsPublished {
  const digest = tagOf(img.Tags, TAG.digest);
  if (digest !== rel.digest) {
    throw new KilnError(`the AMI name ${img.Name} is taken in ${region} by ${img.ImageId}, ${digest ? `made from another release (${digest})` : 'which Kiln did not make (no kiln:release-digest tag)'}`, {
      hint: 'a release is never published twice under one name: deregister that AMI if it is wrong, or publish a new version',
    });
  }
  if (img.State && img.State !== 'available') throw new KilnError(`${img.ImageId} (${img.Name}) in ${region} is ${img.State}`, { hint: 'wait until it is available, or deregister it and publish again' });
  return { region, imageId: img.ImageId ?? '', existing: true, snapshotId: img.BlockDeviceMappings?.[0]?.Ebs?.SnapshotId };
}

async function uploadSnapshot(ebs: EBSClient, ec2: EC2Client, rel: ReleaseToPublish, region: string, opts: AwsPublishOptions): Promise<{ snapshotId: string; upload: NonNullable<AwsPublished['upload']> }> {
  const log = opts.logger;
  const volumeSize = volumeSizeGiB(rel.rawSize);
  // One token per release and region: a rerun after an interruption gets the same pending snapshot back.
  const token = createHash('sha256').update(`kiln-ebs\0${rel.digest}\0${region}`).digest('hex').slice(0, 64);
  const start = (clientToken: string) => call('StartSnapshot', region, () => ebs.send(new StartSnapshotCommand({
    VolumeSize: volumeSize, ClientToken: clientToken, Description: `${rel.name} ${rel.version} raw disk (Kiln release ${rel.digest})`,
    Tags: releaseTags(rel), Timeout: 60,
  })));
  // Pending snapshots of this release before StartSnapshot: if the token gives one of them back, an
  // interrupted run is being resumed.
  const pending = await call('DescribeSnapshots', region, () => ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ['self'], Filters: [{ Name: `tag:${TAG.digest}`, Values: [rel.digest] }, { Name: 'status', Values: ['pending'] }] })));
  let snap: StartSnapshotCommandOutput = await start(token);
  if (pending.Snapshots?.some((x) => x.SnapshotId === snap.SnapshotId)) {
    log.info(`aws ${region}: resuming snapshot ${snap.SnapshotId} of an interrupted run (every block is put again)`);
  } else {
    // New, or the token's answer from an earlier run whose snapshot completed, failed or was deleted
    // since (idempotency replays the first answer): only a snapshot pending now is written to.
    const now = await call('DescribeSnapshots', region, () => ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ['self'], Filters: [{ Name: 'snapshot-id', Values: [snap.SnapshotId ?? ''] }] })));
    const state = now.Snapshots?.[0]?.State;
    if (state !== 'pending') {
      log.debug(`aws ${region}: snapshot ${snap.SnapshotId} of an earlier run is ${state ?? 'gone'}; starting another`);
      snap = await start(`${token.slice(0, 48)}${Date.now().toString(16)}`);
    }
  }
  const snapshotId = snap.SnapshotId;
  if (!snapshotId) throw new KilnError(`StartSnapshot in ${region} returned no snapshot id`);
  if ((snap.BlockSize ?? EBS_BLOCK) !== EBS_BLOCK) throw new KilnError(`StartSnapshot in ${region} reports block size ${snap.BlockSize}, Kiln writes ${EBS_BLOCK}`);
  // Unwritten blocks of an unencrypted snapshot read as zeros; an encrypted one (KMS, or the
  // account's encryption by default) needs every block.
  const skipZero = !snap.KmsKeyArn;
  log.info(`aws ${region}: uploading ${rel.name}@${rel.version} raw disk (${humanBytes(rel.rawSize)}) to snapshot ${snapshotId}${skipZero ? ', all-zero blocks skipped' : ' (encrypted: every block)'}`);

  const stats: { read: number; skipped: number; sha256?: string } = { read: 0, skipped: 0 };
  const put: { index: number; sha256: Buffer }[] = [];
  const parallel = Math.max(1, opts.parallel ?? 16);
  const t0 = Date.now();
  let sent = 0;
  let lastReport = 0;
  const totalBlocks = Math.ceil(rel.rawSize / EBS_BLOCK);
  const inFlight = new Set<Promise<void>>();
  // Each request in flight listens to the abort signal.
  if (opts.signal) setMaxListeners(parallel + 16, opts.signal);
  let failure: unknown;
  try {
    for await (const b of diskBlocks(rel.rawFile, { skipZero, stats })) {
      opts.signal?.throwIfAborted();
      if (failure) break;
      const sum = blockChecksum(b.data);
      const p = call(`PutSnapshotBlock ${b.index}`, region, () => ebs.send(new PutSnapshotBlockCommand({
        SnapshotId: snapshotId, BlockIndex: b.index, BlockData: b.data, DataLength: EBS_BLOCK,
        Checksum: sum.base64, ChecksumAlgorithm: 'SHA256', Progress: Math.floor((100 * stats.read) / totalBlocks),
      }), { abortSignal: opts.signal })).then(() => {
        put.push({ index: b.index, sha256: sum.raw });
        sent += EBS_BLOCK;
        const now = Date.now();
        if (now - lastReport > 2000) {
          lastReport = now;
          const rate = sent / Math.max(0.001, (now - t0) / 1000);
          const left = ((totalBlocks - stats.read) * EBS_BLOCK * ((put.length) / Math.max(1, stats.read))) / Math.max(1, rate);
          log.info(`aws ${region}: ${humanBytes(sent)} sent, ${humanBytes(rate)}/s, block ${stats.read}/${totalBlocks}, ~${humanSeconds(left * 1000)} left`);
        }
      }, (e) => { failure ??= e; });
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      if (inFlight.size >= parallel) await Promise.race(inFlight);
    }
  } finally {
    await Promise.allSettled([...inFlight]);
  }
  if (failure) throw failure;
  opts.signal?.throwIfAborted();
  if (stats.sha256 !== rel.rawSha256) {
    // Never completed: the pending snapshot times out; it is also deleted now.
    await call('DeleteSnapshot', region, () => ec2.send(new DeleteSnapshotCommand({ SnapshotId: snapshotId }))).catch(() => undefined);
    throw new KilnError(`the raw disk of ${rel.name}@${rel.version} read ${stats.sha256}, the release says ${rel.rawSha256}: nothing was registered`, { where: { file: rel.rawFile }, hint: 'the store was changed: kiln verify shows what; pull the release again' });
  }
  await call('CompleteSnapshot', region, () => ebs.send(new CompleteSnapshotCommand({
    SnapshotId: snapshotId, ChangedBlocksCount: put.length,
    Checksum: linearAggregate(put), ChecksumAlgorithm: 'SHA256', ChecksumAggregationMethod: 'LINEAR',
  })));
  const seconds = (Date.now() - t0) / 1000;
  log.info(`aws ${region}: ${put.length} blocks (${humanBytes(put.length * EBS_BLOCK)}) sent, ${stats.skipped} all-zero blocks skipped, in ${seconds.toFixed(1)} s`);
  return { snapshotId, upload: { blocks: put.length, skipped: stats.skipped, bytes: put.length * EBS_BLOCK, seconds } };
}

async function describeSnapshot(ec2: EC2Client, region: string, id: string): Promise<Snapshot | undefined> {
  const r = await call('DescribeSnapshots', region, () => ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [id] })));
  return r.Snapshots?.[0];
}

async function waitForSnapshot(ec2: EC2Client, region: string, id: string, opts: AwsPublishOptions): Promise<void> {
  const limit = (opts.waitSeconds ?? 1800) * 1000;
  const t0 = Date.now();
  let delay = opts.pollMs ?? 2000;
  for (;;) {
    const s = await describeSnapshot(ec2, region, id);
    if (s?.State === 'completed') return;
    if (s?.State === 'error') throw new KilnError(`snapshot ${id} in ${region} failed: ${s.StateMessage ?? 'state error'}`, { hint: 'publish again: a new snapshot is uploaded' });
    if (Date.now() - t0 > limit) throw new KilnError(`snapshot ${id} in ${region} is still ${s?.State ?? 'missing'} (${s?.Progress ?? '?'}) after ${humanSeconds(limit)}`, { hint: 'publish again later (it resumes), or raise publish.aws.wait' });
    opts.signal?.throwIfAborted();
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 15_000);
  }
}

/** Snapshots of this release that no AMI uses (an interrupted earlier run): deleted, never anything else. */
async function deleteOrphanSnapshots(ec2: EC2Client, region: string, rel: ReleaseToPublish, keep: string, log: Logger): Promise<void> {
  const r = await call('DescribeSnapshots', region, () => ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ['self'], Filters: [{ Name: `tag:${TAG.digest}`, Values: [rel.digest] }] })));
  for (const s of r.Snapshots ?? []) {
    if (!s.SnapshotId || s.SnapshotId === keep || tagOf(s.Tags, TAG.digest) !== rel.digest) continue;
    try {
      await ec2.send(new DeleteSnapshotCommand({ SnapshotId: s.SnapshotId }));
      log.info(`aws ${region}: deleted ${s.SnapshotId}, left by an interrupted upload of this release`);
    } catch (e) {
      log.warn(`aws ${region}: could not delete ${s.SnapshotId} left by an interrupted upload: ${(e as Error).message}`);
    }
  }
}

async function copyToRegion(rel: ReleaseToPublish, sourceImage: string, sourceRegion: string, region: string, opts: AwsPublishOptions): Promise<AwsPublished> {
  const { ec2 } = clients(region);
  try {
    const name = amiName(rel);
    const existing = await findOwnImage(ec2, region, name);
    if (existing?.ImageId) return existingImage(existing, rel, region);
    const token = createHash('sha256').update(`kiln-copy\0${rel.digest}\0${region}`).digest('hex').slice(0, 64);
    const c = await call('CopyImage', region, () => ec2.send(new CopyImageCommand({
      SourceImageId: sourceImage, SourceRegion: sourceRegion, Name: name, ClientToken: token, CopyImageTags: true,
      Description: `${rel.name} ${rel.version} (Kiln release ${rel.digest})`,
    })));
    const imageId = c.ImageId;
    if (!imageId) throw new KilnError(`CopyImage in ${region} returned no image id`);
    const limit = (opts.waitSeconds ?? 1800) * 1000;
    const t0 = Date.now();
    let delay = opts.pollMs ?? 5000;
    for (;;) {
      const r = await call('DescribeImages', region, () => ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] })));
      const state = r.Images?.[0]?.State;
      if (state === 'available') break;
      if (state === 'failed' || state === 'error' || state === 'invalid') throw new KilnError(`the copy ${imageId} of ${sourceImage} into ${region} is ${state}: ${r.Images?.[0]?.StateReason?.Message ?? ''}`, { hint: 'deregister it and publish again' });
      if (Date.now() - t0 > limit) throw new KilnError(`the copy ${imageId} into ${region} is still ${state ?? 'missing'} after ${humanSeconds(limit)}`, { hint: 'publish again later: the copy is found by its name and recorded once available' });
      opts.signal?.throwIfAborted();
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 30_000);
    }
    opts.logger.info(`aws ${region}: ${imageId} copied from ${sourceImage} (${sourceRegion})`);
    return { region, imageId, existing: false };
  } finally {
    ec2.destroy();
  }
}
