import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  CompleteSnapshotCommand, EBSClient, GetSnapshotBlockCommand, ListSnapshotBlocksCommand, PutSnapshotBlockCommand, StartSnapshotCommand,
} from '@aws-sdk/client-ebs';
import {
  CopyImageCommand, DeleteSnapshotCommand, DeregisterImageCommand, DescribeImagesCommand, DescribeSnapshotsCommand, EC2Client, RegisterImageCommand,
  type RegisterImageCommandInput,
} from '@aws-sdk/client-ec2';
import { startAwsStandIn, validateAgainstModel, type AwsStandIn } from '../support/aws-standin.js';

const BLOCK = 524_288;
const GIB = 1024 ** 3;
const REGION = 'eu-west-1';
const KEYS = { accessKeyId: 'AKIDKILNSTANDIN', secretAccessKey: 'kiln-standin-secret' };

async function withStandIn(fn: (s: AwsStandIn, dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-standin-'));
  const standIn = await startAwsStandIn({ dir, ...KEYS });
  try { await fn(standIn, dir); } finally {
    await standIn.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function clients(s: AwsStandIn, region = REGION, credentials = KEYS): { ebs: EBSClient; ec2: EC2Client } {
  return { ebs: new EBSClient({ endpoint: s.endpoint, region, credentials }), ec2: new EC2Client({ endpoint: s.endpoint, region, credentials }) };
}

const digest = (b: Buffer): Buffer => createHash('sha256').update(b).digest();
const pattern = (seed: number): Buffer => Buffer.alloc(BLOCK, `kiln block ${seed} `);

/** What `fn` throws, as the SDK surfaces it. */
async function refusal(fn: () => Promise<unknown>): Promise<{ name: string; message: string }> {
  try { await fn(); } catch (e) { return { name: (e as Error).name, message: (e as Error).message }; }
  throw new Error('expected a refusal');
}

async function putBlocks(ebs: EBSClient, snapshotId: string, blocks: Map<number, Buffer>): Promise<void> {
  await Promise.all([...blocks].map(([BlockIndex, data]) => ebs.send(new PutSnapshotBlockCommand({
    SnapshotId: snapshotId, BlockIndex, BlockData: data, DataLength: BLOCK, Checksum: digest(data).toString('base64'), ChecksumAlgorithm: 'SHA256',
  }))));
}

function linearAggregate(blocks: Map<number, Buffer>): string {
  return digest(Buffer.concat([...blocks].sort((a, b) => a[0] - b[0]).map(([, d]) => digest(d)))).toString('base64');
}

async function completedSnapshot(ebs: EBSClient, ec2: EC2Client, blocks: Map<number, Buffer>): Promise<string> {
  const { SnapshotId } = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1, Description: 'kiln test' }));
  await putBlocks(ebs, SnapshotId!, blocks);
  await ebs.send(new CompleteSnapshotCommand({
    SnapshotId, ChangedBlocksCount: blocks.size, Checksum: linearAggregate(blocks), ChecksumAlgorithm: 'SHA256', ChecksumAggregationMethod: 'LINEAR',
  }));
  for (let i = 0; i < 5; i++) {
    const { Snapshots } = await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [SnapshotId!] }));
    if (Snapshots?.[0]?.State === 'completed') return SnapshotId!;
  }
  throw new Error(`${SnapshotId} never completed`);
}

function registration(name: string, snapshotId: string, version = 'release-0.1.0'): RegisterImageCommandInput {
  return {
    Name: name, Architecture: 'x86_64', VirtualizationType: 'hvm', RootDeviceName: '/dev/xvda', EnaSupport: true,
    BootMode: 'uefi-preferred', TpmSupport: 'v2.0', ImdsSupport: 'v2.0',
    BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: snapshotId, DeleteOnTermination: true, VolumeType: 'gp3' } }],
    TagSpecifications: [
      { ResourceType: 'image', Tags: [{ Key: 'ImageVersion', Value: version }, { Key: 'Kiln', Value: 'yes' }] },
      { ResourceType: 'snapshot', Tags: [{ Key: 'ImageVersion', Value: version }] },
    ],
  };
}

/** The volume file holds `blocks` at their offsets and zeros everywhere else. */
async function assertVolume(file: string, blocks: Map<number, Buffer>, sizeGiB: number): Promise<void> {
  const fh = await open(file, 'r');
  try {
    assert.equal((await fh.stat()).size, sizeGiB * GIB);
    const chunk = Buffer.alloc(64 * BLOCK);
    const zeros = Buffer.alloc(chunk.length);
    for (let offset = 0; offset < sizeGiB * GIB; offset += chunk.length) {
      await fh.read(chunk, 0, chunk.length, offset);
      const inside = [...blocks].filter(([index]) => index * BLOCK >= offset && index * BLOCK < offset + chunk.length);
      const expected = inside.length ? Buffer.alloc(chunk.length) : zeros;
      for (const [index, data] of inside) data.copy(expected, index * BLOCK - offset);
      assert.ok(chunk.equals(expected), `volume differs in the ${chunk.length} bytes at ${offset}`);
    }
  } finally { await fh.close(); }
}

test('round trip: 3 blocks of a 1 GiB volume, completed, registered (uefi-preferred, tags), found by tag, reassembled', async () => {
  await withStandIn(async (s, dir) => {
    const { ebs, ec2 } = clients(s);
    const blocks = new Map([[0, pattern(0)], [777, pattern(1)], [2047, pattern(2)]]);
    const { SnapshotId, BlockSize, Status } = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1, Tags: [{ Key: 'Kiln', Value: 'yes' }] }));
    assert.match(SnapshotId!, /^snap-[0-9a-f]{17}$/);
    assert.equal(BlockSize, BLOCK);
    assert.equal(Status, 'pending');
    await putBlocks(ebs, SnapshotId!, blocks);
    const done = await ebs.send(new CompleteSnapshotCommand({
      SnapshotId, ChangedBlocksCount: 3, Checksum: linearAggregate(blocks), ChecksumAlgorithm: 'SHA256', ChecksumAggregationMethod: 'LINEAR',
    }));
    assert.equal(done.Status, 'completed');

    // AWS completes asynchronously: registering before DescribeSnapshots says completed is refused; the first look says pending.
    assert.equal((await refusal(() => ec2.send(new RegisterImageCommand(registration('kiln-demo 0.1.0', SnapshotId!))))).name, 'IncorrectState');
    const first = await ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ['self'], Filters: [{ Name: 'tag:Kiln', Values: ['yes'] }] }));
    assert.equal(first.Snapshots?.[0]?.State, 'pending');
    const second = await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [SnapshotId!] }));
    assert.equal(second.Snapshots?.[0]?.State, 'completed');
    assert.equal(second.Snapshots?.[0]?.VolumeSize, 1);

    const { ImageId } = await ec2.send(new RegisterImageCommand(registration('kiln-demo 0.1.0', SnapshotId!)));
    assert.match(ImageId!, /^ami-[0-9a-f]{17}$/);
    const other = await completedSnapshot(ebs, ec2, new Map([[1, pattern(9)]]));
    await ec2.send(new RegisterImageCommand(registration('kiln-demo 0.2.0', other, 'release-0.2.0')));

    const { Images } = await ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'tag:ImageVersion', Values: ['release-0.1.0'] }] }));
    assert.equal(Images?.length, 1);
    const image = Images![0];
    assert.equal(image.ImageId, ImageId);
    assert.equal(image.BootMode, 'uefi-preferred');
    assert.equal(image.TpmSupport, 'v2.0');
    assert.equal(image.OwnerId, s.accountId);
    assert.equal(image.State, 'available');
    assert.equal(image.BlockDeviceMappings?.[0]?.Ebs?.SnapshotId, SnapshotId);
    assert.deepEqual(image.Tags?.map((t) => `${t.Key}=${t.Value}`).sort(), ['ImageVersion=release-0.1.0', 'Kiln=yes']);
    const byName = await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'name', Values: ['kiln-demo 0.?.*'] }] }));
    assert.equal(byName.Images?.length, 2);
    assert.deepEqual(s.snapshots(REGION).find((x) => x.snapshotId === SnapshotId)?.tags, { Kiln: 'yes', ImageVersion: 'release-0.1.0' });
    assert.equal(s.snapshots(REGION).find((x) => x.snapshotId === SnapshotId)?.blockCount, 3);

    // Read back through the EBS direct API, and reassembled into a sparse volume file.
    const listed = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId, MaxResults: 100 }));
    assert.deepEqual(listed.Blocks?.map((b) => b.BlockIndex), [0, 777, 2047]);
    const got = await ebs.send(new GetSnapshotBlockCommand({ SnapshotId, BlockIndex: 777, BlockToken: listed.Blocks![1].BlockToken }));
    assert.ok(Buffer.from(await got.BlockData!.transformToByteArray()).equals(pattern(1)));
    assert.equal(got.Checksum, digest(pattern(1)).toString('base64'));
    const volume = join(dir, 'volume.raw');
    await s.reassemble(REGION, SnapshotId!, volume);
    await assertVolume(volume, blocks, 1);
    assert.deepEqual(s.rejected.map((r) => r.code), ['IncorrectState']);
    assert.ok(s.requests.every((r) => r.region === REGION));
  });
});

test('a block whose checksum is not its SHA-256, or of the wrong length, is refused', async () => {
  await withStandIn(async (s) => {
    const { ebs } = clients(s);
    const { SnapshotId } = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    const bad = await refusal(() => ebs.send(new PutSnapshotBlockCommand({
      SnapshotId, BlockIndex: 0, BlockData: pattern(1), DataLength: BLOCK, Checksum: digest(pattern(2)).toString('base64'), ChecksumAlgorithm: 'SHA256',
    })));
    assert.equal(bad.name, 'ValidationException');
    assert.match(bad.message, /checksum/);
    const beyond = await refusal(() => putBlocks(ebs, SnapshotId!, new Map([[2048, pattern(1)]])));
    assert.equal(beyond.name, 'ValidationException');
    const short = Buffer.alloc(4096, 1);
    const shortBlock = await refusal(() => ebs.send(new PutSnapshotBlockCommand({
      SnapshotId, BlockIndex: 0, BlockData: short, DataLength: 4096, Checksum: digest(short).toString('base64'), ChecksumAlgorithm: 'SHA256',
    })));
    assert.equal(shortBlock.name, 'ValidationException');
    assert.deepEqual(s.rejected.map((r) => `${r.operation} ${r.status} ${r.code}`), Array(3).fill('PutSnapshotBlock 400 ValidationException'));
    assert.equal(s.snapshots(REGION)[0].blockCount, 0);
  });
});

test('CompleteSnapshot refuses a wrong aggregate checksum or block count', async () => {
  await withStandIn(async (s) => {
    const { ebs } = clients(s);
    const blocks = new Map([[3, pattern(3)], [1, pattern(1)]]);
    const { SnapshotId } = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    await putBlocks(ebs, SnapshotId!, blocks);
    const unordered = digest(Buffer.concat([digest(pattern(3)), digest(pattern(1))])).toString('base64'); // not in block index order
    const common = { SnapshotId, ChecksumAlgorithm: 'SHA256', ChecksumAggregationMethod: 'LINEAR' } as const;
    assert.equal((await refusal(() => ebs.send(new CompleteSnapshotCommand({ ...common, ChangedBlocksCount: 2, Checksum: unordered })))).name, 'ValidationException');
    assert.equal((await refusal(() => ebs.send(new CompleteSnapshotCommand({ ...common, ChangedBlocksCount: 3, Checksum: linearAggregate(blocks) })))).name, 'ValidationException');
    assert.equal(s.snapshots(REGION)[0].status, 'pending');
    await ebs.send(new CompleteSnapshotCommand({ ...common, ChangedBlocksCount: 2, Checksum: linearAggregate(blocks) }));
    assert.equal(s.snapshots(REGION)[0].status, 'completed');
    assert.equal((await refusal(() => putBlocks(ebs, SnapshotId!, new Map([[5, pattern(5)]])))).name, 'ValidationException');
  });
});

test('a second image with the same name in the same region is refused; other regions are separate', async () => {
  await withStandIn(async (s) => {
    const { ebs, ec2 } = clients(s);
    const snap = await completedSnapshot(ebs, ec2, new Map([[0, pattern(0)]]));
    await ec2.send(new RegisterImageCommand(registration('kiln-demo', snap)));
    const dup = await refusal(() => ec2.send(new RegisterImageCommand(registration('kiln-demo', snap))));
    assert.equal(dup.name, 'InvalidAMIName.Duplicate');
    const tpm = await refusal(() => ec2.send(new RegisterImageCommand({ ...registration('kiln-bios', snap), BootMode: 'legacy-bios' })));
    assert.equal(tpm.name, 'InvalidParameterCombination');
    const us = clients(s, 'us-east-1');
    const usSnap = await completedSnapshot(us.ebs, us.ec2, new Map([[0, pattern(0)]]));
    await us.ec2.send(new RegisterImageCommand(registration('kiln-demo', usSnap)));
    assert.equal((await refusal(() => us.ec2.send(new RegisterImageCommand(registration('kiln-other', snap))))).name, 'InvalidSnapshot.NotFound');
    assert.deepEqual([s.images(REGION).length, s.images('us-east-1').length], [1, 1]);

    // The snapshot stays after deregistering, and can be deleted only then.
    const imageId = s.images(REGION)[0].imageId;
    assert.equal((await refusal(() => ec2.send(new DeleteSnapshotCommand({ SnapshotId: snap })))).name, 'InvalidSnapshot.InUse');
    await ec2.send(new DeregisterImageCommand({ ImageId: imageId }));
    assert.equal((await refusal(() => ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] })))).name, 'InvalidAMIID.NotFound');
    await ec2.send(new DeleteSnapshotCommand({ SnapshotId: snap }));
    assert.equal(s.snapshots(REGION).length, 0);
  });
});

test('ClientToken: the same request returns the same snapshot or image, a different one is refused', async () => {
  await withStandIn(async (s, dir) => {
    const { ebs, ec2 } = clients(s);
    const a = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ClientToken: 'kiln-token-1' }));
    const b = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ClientToken: 'kiln-token-1' }));
    assert.equal(a.SnapshotId, b.SnapshotId);
    assert.equal((await refusal(() => ebs.send(new StartSnapshotCommand({ VolumeSize: 2, ClientToken: 'kiln-token-1' })))).name, 'ConflictException');
    assert.equal(s.snapshots(REGION).length, 1);
    const blocks = new Map([[5, pattern(5)]]);
    const snap = await completedSnapshot(ebs, ec2, blocks);
    const { ImageId } = await ec2.send(new RegisterImageCommand(registration('kiln-demo', snap)));
    const us = clients(s, 'us-east-1').ec2;
    const copy = { SourceImageId: ImageId, SourceRegion: REGION, Name: 'kiln-demo', ClientToken: 'kiln-copy-1', CopyImageTags: true };
    const c1 = await us.send(new CopyImageCommand(copy));
    const c2 = await us.send(new CopyImageCommand(copy));
    assert.equal(c1.ImageId, c2.ImageId);
    assert.equal((await refusal(() => us.send(new CopyImageCommand({ ...copy, Name: 'kiln-other' })))).name, 'IdempotentParameterMismatch');
    const [copied] = s.images('us-east-1');
    assert.equal(copied.tags.ImageVersion, 'release-0.1.0');
    const copiedSnap = copied.blockDeviceMappings[0].snapshotId;
    assert.notEqual(copiedSnap, snap);
    await s.reassemble('us-east-1', copiedSnap, join(dir, 'copy.raw'));
    await assertVolume(join(dir, 'copy.raw'), blocks, 1);
  });
});

test('requests signed with a wrong secret key or an unknown key are refused', async () => {
  await withStandIn(async (s) => {
    const wrong = clients(s, REGION, { ...KEYS, secretAccessKey: 'not-the-secret' });
    assert.equal((await refusal(() => wrong.ec2.send(new DescribeImagesCommand({ Owners: ['self'] })))).name, 'SignatureDoesNotMatch');
    assert.equal((await refusal(() => wrong.ebs.send(new StartSnapshotCommand({ VolumeSize: 1 })))).name, 'InvalidSignatureException');
    const unknown = clients(s, REGION, { ...KEYS, accessKeyId: 'AKIDSOMEONEELSE' });
    assert.equal((await refusal(() => unknown.ec2.send(new DescribeImagesCommand({ Owners: ['self'] })))).name, 'AuthFailure');
    assert.equal(s.requests.length, 0);
    assert.equal(s.snapshots(REGION).length, 0);
  });
});

test('parameters are checked against the merged botocore model, in validateAgainstModel and on the wire', async () => {
  assert.ok(validateAgainstModel('ec2', 'RegisterImage', { Name: 'x', Bogus: 1 }).some((p) => /unknown parameter Bogus/.test(p)));
  assert.deepEqual(validateAgainstModel('ec2', 'RegisterImage', { ...registration('kiln-demo', 'snap-0123456789abcdef0') }), []);
  assert.ok(validateAgainstModel('ec2', 'RegisterImage', { Name: 'x', BootMode: 'bios' }).some((p) => /BootMode/.test(p)));
  assert.ok(validateAgainstModel('ec2', 'RegisterImage', {}).some((p) => /missing required parameter Name/.test(p)));
  assert.ok(validateAgainstModel('ec2', 'RegisterImage', { Name: 'x', TagSpecifications: [{ ResourceType: 'image', Tags: [{ Key: 'a', Colour: 'b' }] }] })
    .some((p) => /TagSpecifications\[0\]\.Tags\[0\]\.Colour/.test(p)));
  assert.ok(validateAgainstModel('ebs', 'StartSnapshot', { VolumeSize: 1, Timeout: 5 }).some((p) => /Timeout.*minimum 10/.test(p)));
  assert.ok(validateAgainstModel('ebs', 'PutSnapshotBlock', { SnapshotId: 'vol-1', BlockIndex: 0 }).length >= 4);
  assert.ok(validateAgainstModel('ec2', 'LaunchRockets', {}).length === 1);

  await withStandIn(async (s) => {
    const { ec2, ebs } = clients(s);
    ec2.middlewareStack.add((next) => async (args) => {
      const request: unknown = args.request;
      if (typeof request === 'object' && request !== null && 'body' in request && typeof request.body === 'string') request.body += '&Bogus=1';
      return next(args);
    }, { step: 'build', priority: 'high', name: 'addBogusParameter' });
    const bogus = await refusal(() => ec2.send(new DescribeImagesCommand({ Owners: ['self'] })));
    assert.equal(bogus.name, 'UnknownParameter');
    assert.match(bogus.message, /Bogus/);
    const missing = await refusal(() => clients(s).ec2.send(new DeregisterImageCommand({ ImageId: undefined as unknown as string })));
    assert.equal(missing.name, 'MissingParameter');
    const tooFew = await refusal(() => ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: 'snap-0123456789abcdef0', MaxResults: 5 })));
    assert.equal(tooFew.name, 'ValidationException');
    assert.deepEqual(s.rejected.map((r) => r.code), ['UnknownParameter', 'MissingParameter', 'ValidationException']);
  });
});

test('failed PutSnapshotBlock calls (as the model declares them) are retried by the SDK', async () => {
  await withStandIn(async (s) => {
    const { ebs } = clients(s);
    const { SnapshotId } = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    s.failNextPuts(2);
    await putBlocks(ebs, SnapshotId!, new Map([[0, pattern(0)]]));
    s.failNextPuts(1, 400);
    await putBlocks(ebs, SnapshotId!, new Map([[1, pattern(1)]]));
    assert.deepEqual(s.rejected.map((r) => `${r.status} ${r.code}`), ['500 InternalServerException', '500 InternalServerException', '400 RequestThrottledException']);
    assert.equal(s.requests.filter((r) => r.operation === 'PutSnapshotBlock').length, 5);
    assert.equal(s.snapshots(REGION)[0].blockCount, 2);
    assert.throws(() => s.failNextPuts(1, 503), /declares no PutSnapshotBlock error with HTTP 503/);
  });
});

test("another account's image, shared with this one, is found by owner and readable block by block", async () => {
  await withStandIn(async (s, dir) => {
    const raw = join(dir, 'upstream.raw');
    const data = Buffer.alloc(3 * BLOCK + 1000);
    pattern(7).copy(data, BLOCK);
    data.fill(9, 3 * BLOCK);
    writeFileSync(raw, data);
    const amiId = await s.addForeignImage({ region: REGION, ownerId: '210987654321', name: 'debian-12-upstream', rawFile: raw });
    const { ec2, ebs } = clients(s);
    const byOwner = await ec2.send(new DescribeImagesCommand({ Owners: ['210987654321'], Filters: [{ Name: 'name', Values: ['debian-12-*'] }] }));
    assert.deepEqual(byOwner.Images?.map((i) => [i.ImageId, i.OwnerId, i.BootMode]), [[amiId, '210987654321', 'uefi']]);
    assert.equal((await ec2.send(new DescribeImagesCommand({ ExecutableUsers: ['self'] }))).Images?.length, 1);
    assert.equal((await ec2.send(new DescribeImagesCommand({ Owners: ['self'] }))).Images?.length, 0);
    const snapshotId = byOwner.Images![0].BlockDeviceMappings![0].Ebs!.SnapshotId!;
    const { Blocks, VolumeSize } = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId }));
    assert.equal(VolumeSize, 1);
    assert.deepEqual(Blocks?.map((b) => b.BlockIndex), [1, 3]);
    const last = await ebs.send(new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: 3, BlockToken: Blocks![1].BlockToken }));
    const expected = Buffer.alloc(BLOCK);
    expected.fill(9, 0, 1000);
    assert.ok(Buffer.from(await last.BlockData!.transformToByteArray()).equals(expected));
    const forged = await refusal(() => ebs.send(new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: 1, BlockToken: Blocks![1].BlockToken })));
    assert.equal(forged.name, 'ValidationException');
    assert.equal((await refusal(() => ec2.send(new RegisterImageCommand(registration('mine', snapshotId))))).name, 'InvalidSnapshot.NotFound');
  });
});

test("Debian's own AWS CLI finds the image by tag", async () => {
  await withStandIn(async (s, dir) => {
    const { ebs, ec2 } = clients(s);
    await ec2.send(new RegisterImageCommand(registration('kiln-demo 0.1.0', await completedSnapshot(ebs, ec2, new Map([[0, pattern(0)]])))));
    await ec2.send(new RegisterImageCommand(registration('kiln-demo 0.2.0', await completedSnapshot(ebs, ec2, new Map([[0, pattern(1)]])), 'release-0.2.0')));
    const home = join(dir, 'home');
    const { stdout } = await promisify(execFile)('/usr/bin/aws', [
      'ec2', 'describe-images', '--endpoint-url', s.endpoint, '--region', REGION, '--owners', 'self',
      '--filters', 'Name=tag:ImageVersion,Values=release-0.1.0', '--output', 'json',
    ], {
      env: {
        PATH: '/usr/bin:/bin', HOME: home, AWS_ACCESS_KEY_ID: KEYS.accessKeyId, AWS_SECRET_ACCESS_KEY: KEYS.secretAccessKey,
        AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_PAGER: '', AWS_EC2_METADATA_DISABLED: 'true',
      },
    });
    const out = JSON.parse(stdout) as { Images: { Name: string; BootMode: string }[] };
    assert.deepEqual(out.Images.map((i) => [i.Name, i.BootMode]), [['kiln-demo 0.1.0', 'uefi-preferred']]);
    assert.deepEqual(s.rejected, []);
  });
});
