/**
 * Issue 15 on the real example release: `kiln publish --to aws` against the AWS stand-in
 * (test/support/aws-standin.ts: NOT AWS, a local server that validates every request against
 * botocore's EC2/EBS models from Debian and enforces the rules of the calls Kiln makes). The bytes
 * are proven end to end: the snapshot is reassembled from the blocks the stand-in stored, hashed here,
 * and booted under UEFI; Debian's own AWS CLI finds the AMI by its ImageVersion tag.
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bootVm } from '../../src/vm/qemu.js';
import { startAwsStandIn, type AwsStandIn } from '../support/aws-standin.js';
import { artifact, builtExample, E2E_DIR, envRecordingPath, filesHolding, freshWorkDir, KILN, kiln, RUN_ID, type BuiltExample } from './fixture.js';

const AKID = 'AKIAKILNSTANDIN00042';
// A distinctive secret: it must appear in no output, log, record, store file or child environment.
const SECRET = 'kilnCanarySecret/4f1c9e7a+StandIn0000000';
const REF = 'web@release-0.1.0';

let built: BuiltExample;
let standin: AwsStandIn;
let work: string;
let env: NodeJS.ProcessEnv;
const outputs: string[] = [];

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 4 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

async function run(args: string[]) {
  const r = await kiln(args, { cwd: built.dir, env });
  outputs.push(r.stdout, r.stderr);
  return r;
}

const puts = (region: string) => standin.requests.filter((q) => q.operation === 'PutSnapshotBlock' && q.region === region).length;

before(async () => {
  built = await builtExample();
  work = freshWorkDir('aws-publish');
  standin = await startAwsStandIn({ dir: join(work, 'standin'), accessKeyId: AKID, secretAccessKey: SECRET });
  env = {
    AWS_ACCESS_KEY_ID: AKID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_ENDPOINT_URL: standin.endpoint,
    AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_EC2_METADATA_DISABLED: 'true',
    PATH: envRecordingPath(work, ['zstd', 'unshare']),
  };
});
after(async () => { await standin?.close(); });

describe('kiln publish --to aws (against the AWS stand-in)', () => {
  let boot: Promise<void> | undefined;
  let published: { region: string; imageId: string; existing: boolean; snapshotId?: string; upload?: { blocks: number; skipped: number; bytes: number } }[];

  test('publishes the release as an AMI in eu-west-1 and copies it to us-east-1, every request valid by AWS\'s models', async () => {
    const r = await run(['publish', REF, '--to', 'aws', '--region', 'eu-west-1', '--region', 'us-east-1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    published = JSON.parse(r.stdout);
    assert.deepEqual(published.map((p) => [p.region, p.existing]), [['eu-west-1', false], ['us-east-1', false]]);
    assert.match(r.stderr, /sent, \d+ all-zero blocks skipped/);
    assert.match(r.stderr, /registered \(web-release-0\.1\.0, boot mode uefi-preferred\)/);
    assert.doesNotMatch(r.stderr, /resuming/, 'nothing was interrupted');
    assert.match(r.stderr, /MiB sent, [0-9.]+ MiB\/s, block \d+\/4096, ~[0-9.]+s left/, 'progress: bytes sent, rate, time left');
    assert.deepEqual(standin.rejected, [], 'the stand-in refused a request Kiln made');
    const up = published[0].upload;
    assert.ok(up && up.blocks > 0 && up.skipped > 0, 'non-zero blocks sent, all-zero ones skipped');
    const raw = built.record.artifacts.find((a) => a.format === 'raw');
    assert.ok(raw);
    assert.equal(up.blocks + up.skipped, Math.ceil(raw.size / (512 * 1024)));
    assert.equal(puts('eu-west-1'), up.blocks);
  });

  test('the AMI and its snapshot carry the version, digest, commit and name; boot mode, ENA and IMDSv2 are set', () => {
    const [img] = standin.images('eu-west-1');
    assert.equal(standin.images('eu-west-1').length, 1);
    assert.equal(img.imageId, published[0].imageId);
    assert.equal(img.name, 'web-release-0.1.0');
    assert.equal(img.tags.ImageVersion, 'release-0.1.0');
    assert.equal(img.tags['kiln:release-digest'], built.record.release?.digest);
    assert.equal(img.tags['kiln:commit'], built.record.commit);
    assert.equal(img.tags['kiln:image'], 'web');
    assert.equal(img.bootMode, 'uefi-preferred');
    assert.equal(img.enaSupport, true);
    assert.equal(img.imdsSupport, 'v2.0');
    assert.equal(img.architecture, 'x86_64');
    assert.equal(img.rootDeviceName, '/dev/xvda');
    const snap = standin.snapshots('eu-west-1').find((s) => s.snapshotId === published[0].snapshotId);
    assert.ok(snap);
    assert.equal(snap.status, 'completed');
    assert.equal(snap.tags.ImageVersion, 'release-0.1.0');
    assert.equal(snap.tags['kiln:release-digest'], built.record.release?.digest);
    const copy = standin.images('us-east-1');
    assert.equal(copy.length, 1);
    assert.equal(copy[0].tags.ImageVersion, 'release-0.1.0');
  });

  test('the snapshot reassembled from the stored blocks is the release\'s raw disk, byte for byte (its UEFI boot starts here)', async () => {
    const disk = join(work, 'reassembled.raw');
    await standin.reassemble('eu-west-1', published[0].snapshotId ?? '', disk);
    const raw = artifact(built, 'raw');
    // The volume is whole GiB; the example's 2 GiB disk fills it exactly.
    assert.equal(statSync(disk).size, statSync(raw).size);
    assert.equal(await sha256Of(disk), built.record.artifacts.find((a) => a.format === 'raw')?.sha256);
    // Booted while the next tests run (TCG takes one core; they mostly wait on the stand-in). Awaited below.
    boot = (async () => {
      const vm = await bootVm({ image: disk, format: 'raw', firmware: 'uefi', cpus: 1, timeoutSec: 480, cloudConfig: ['ssh_deletekeys: false', 'ssh_genkeytypes: []'] });
      try {
        assert.match((await vm.ssh('cat /etc/release')).stdout, /^IMAGE_VERSION=release-0\.1\.0$/m);
        assert.match((await vm.ssh('test -d /sys/firmware/efi && echo uefi')).stdout.trim(), /^uefi$/);
      } finally {
        await vm.stop();
        rmSync(disk, { force: true });
      }
    })();
    boot.catch(() => undefined);
  });

  test("Debian's AWS CLI finds exactly that AMI by the guide's ImageVersion filter", async () => {
    // Asynchronously: the stand-in answers from this process, so a synchronous child would wait for ever.
    const awsCli = async (version: string) => JSON.parse((await promisify(execFile)('/usr/bin/aws', ['ec2', 'describe-images', '--endpoint-url', standin.endpoint, '--region', 'eu-west-1', '--owners', 'self',
      '--filters', `Name=tag:ImageVersion,Values=${version}`, '--output', 'json'], {
      encoding: 'utf8', timeout: 120_000,
      env: { PATH: '/usr/bin:/bin', HOME: work, AWS_ACCESS_KEY_ID: AKID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_EC2_METADATA_DISABLED: 'true' },
    })).stdout) as { Images: { ImageId: string }[] };
    assert.deepEqual((await awsCli('release-0.1.0')).Images.map((i) => i.ImageId), [published[0].imageId]);
    assert.equal((await awsCli('release-9.9.9')).Images.length, 0);
  });

  test('kiln resolve --cloud, --terraform and kiln releases show where the release is published', async () => {
    const eu = await run(['resolve', REF, '--cloud', 'aws', '--region', 'eu-west-1']);
    assert.equal(eu.code, 0, eu.stderr);
    assert.equal(eu.stdout.trim(), published[0].imageId);
    const us = await run(['resolve', REF, '--cloud', 'aws', '--region', 'us-east-1']);
    assert.equal(us.stdout.trim(), published[1].imageId);
    const missing = await run(['resolve', REF, '--cloud', 'aws', '--region', 'me-south-1']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no aws image in me-south-1: it is published to aws in (ap-south-1, )?eu-west-1, us-east-1/);
    const tf = await new Promise<string>((res, rej) => {
      const c = spawn(process.execPath, [KILN, 'resolve', '--terraform'], { cwd: built.dir, env: { ...process.env, ...env } });
      let out = '';
      c.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      c.on('close', (code) => (code === 0 ? res(out) : rej(new Error(`exit ${code}`))));
      c.stdin.end(JSON.stringify({ release: REF, cloud: 'aws', region: 'us-east-1' }));
    });
    const t = JSON.parse(tf) as Record<string, string>;
    assert.equal(t.image_id, published[1].imageId);
    assert.equal(t['aws_eu-west-1'], published[0].imageId);
    const ls = await run(['releases', 'web']);
    assert.match(ls.stdout, /release-0\.1\.0 .* aws:(ap-south-1,)?eu-west-1,us-east-1 /);
  });

  test('publishing again uploads nothing and reports the AMIs that are there', async () => {
    const before = standin.requests.length;
    const putsBefore = puts('eu-west-1');
    const r = await run(['publish', REF, '--to', 'aws', '--region', 'eu-west-1', '--region', 'us-east-1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const again = JSON.parse(r.stdout) as typeof published;
    assert.deepEqual(again.map((p) => [p.imageId, p.existing]), published.map((p) => [p.imageId, true]));
    assert.equal(puts('eu-west-1'), putsBefore);
    const calls = standin.requests.slice(before).map((q) => q.operation);
    assert.ok(!calls.some((o) => ['StartSnapshot', 'PutSnapshotBlock', 'RegisterImage', 'CopyImage'].includes(o)), calls.join(', '));
    assert.equal(standin.images('eu-west-1').length, 1);
  });

  test('an upload killed midway, then run again (with failing blocks retried), completes with one AMI and one snapshot', async () => {
    const region = 'ap-south-1';
    const child = spawn(process.execPath, [KILN, 'publish', REF, '--to', 'aws', '--region', region, '--parallel', '2'], { cwd: built.dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.stdout.on('data', (d: Buffer) => { outputs.push(d.toString()); });
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    const t0 = Date.now();
    while (puts(region) < 40 && Date.now() - t0 < 120_000) await new Promise((res) => setTimeout(res, 20));
    child.kill('SIGKILL');
    await exited;
    outputs.push(stderr);
    assert.ok(puts(region) >= 40, `the first run put ${puts(region)} blocks`);
    assert.equal(standin.images(region).length, 0, 'no AMI from the killed run');
    assert.ok(standin.snapshots(region).every((s) => s.status === 'pending'), 'the killed run completed no snapshot');
    standin.failNextPuts(3); // InternalServerException: retried by the SDK
    const r = await run(['publish', REF, '--to', 'aws', '--region', region, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /resuming snapshot snap-[0-9a-f]+ of an interrupted run/);
    const [p] = JSON.parse(r.stdout) as typeof published;
    assert.equal(standin.images(region).length, 1);
    assert.deepEqual(standin.snapshots(region).map((s) => [s.snapshotId, s.status]), [[p.snapshotId, 'completed']]);
    const disk = join(work, 'resumed.raw');
    await standin.reassemble(region, p.snapshotId ?? '', disk);
    assert.equal(await sha256Of(disk), built.record.artifacts.find((a) => a.format === 'raw')?.sha256);
    rmSync(disk, { force: true });
  });

  // Pruning three releases, a channel and a hand-made AMI: test/unit/aws-publish.test.ts.
  test('kiln prune --cloud aws on the real release is a dry run by default that keeps the newest and changes nothing', async () => {
    const region = 'eu-west-1';
    const dry = await run(['prune', 'web', '--cloud', 'aws', '--region', region, '--keep', '1']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stderr, /dry run: 0 AMI\(s\) would be deleted with their snapshots, 1 kept/);
    assert.match(dry.stdout, /^keep\teu-west-1\tami-[0-9a-f]+\trelease-0\.1\.0\t/m);
    assert.equal(standin.images(region).length, 1);
  });

  test('the reassembled snapshot booted under UEFI with its version (the boot started above)', async () => {
    assert.ok(boot, 'the boot was started');
    await boot;
  });

  test('the AWS secret appears in no output, log, store file or host command environment', () => {
    const seen = filesHolding([join(built.dir, '.kiln', 'store'), join(E2E_DIR, RUN_ID, 'logs')], [SECRET]);
    for (const o of outputs) if (o.includes(SECRET)) seen.push('kiln output');
    const dumps = readdirSync(work).filter((f) => f.startsWith('env-'));
    // unshare starts fuse2fs for the EC2 fitness check (zstd runs too when an initramfs is zstd-compressed).
    assert.ok(dumps.some((f) => f.startsWith('env-unshare')), `host commands ran through the shims: ${dumps.join(', ')}`);
    for (const f of dumps) {
      const text = readFileSync(join(work, f), 'utf8');
      if (text.includes(SECRET) || /^AWS_/m.test(text)) seen.push(`environment of ${f}`);
    }
    assert.deepEqual(seen, []);
  });
});
