/**
 * Issue 15, item 8: an AMI as the trusted upstream, served by the AWS stand-in
 * (test/support/aws-standin.ts: NOT AWS; every request is checked against botocore's models from
 * Debian). The "vendor" AMI belongs to another account and holds the example build's disk; Kiln finds
 * it by name under the pinned owner, copies it into the account (EBS reads only the account's own
 * snapshots), reads the copy block by block, removes the copy, and builds on it. The image boots.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bootVm } from '../../src/vm/qemu.js';
import { startAwsStandIn, type AwsStandIn } from '../support/aws-standin.js';
import { artifact, builtExample, E2E_DIR, git, kiln, RUN_ID, type BuildRecordLite } from './fixture.js';

const VENDOR = '136693071363';
const OTHER = '999988887777';
const AKID = 'AKIAKILNUPSTREAM0001';
const SECRET = 'upstream/StandInSecret+0000000000000000';
const TAG = 'release-0.5.0';

interface Rec extends BuildRecordLite { source: BuildRecordLite['source'] & { type?: string; checks?: string[]; sha256?: string; ami?: { imageId: string; owner: string; region: string } } }

function repo(name: string, url: string, owner: string, extra = ''): string {
  const dir = join(E2E_DIR, RUN_ID, 'ami repos', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'kiln.yaml'), `name: ami-child\nsource:\n  image:\n    url: ${url}\n    owner: "${owner}"\nprovision:\n  playbook: site.yml\ndisk:\n  size: 2GiB\nformats: [raw, qcow2]\n${extra}`);
  writeFileSync(join(dir, 'site.yml'), `- hosts: all\n  gather_facts: false\n  tasks:\n    - name: the child's own file\n      ansible.builtin.copy:\n        dest: /etc/ami-child.conf\n        content: "built on an AMI\\n"\n        mode: "0644"\n`);
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'add', '-A');
  execFileSync('git', ['-C', dir, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', 'commit', '-qm', 'child'], { env: { ...process.env, GIT_AUTHOR_DATE: '2026-11-25T12:00:00Z', GIT_COMMITTER_DATE: '2026-11-25T12:00:00Z' } });
  return dir;
}

describe('source.image: an AMI of a pinned owner account, read through the EBS direct APIs (AWS stand-in)', () => {
  let standin: AwsStandIn;
  let env: NodeJS.ProcessEnv;
  let vendorAmi: string;
  let otherAmi: string;
  let dir: string;
  let rec: Rec;
  let exampleRawSha = '';

  before(async () => {
    const example = await builtExample();
    exampleRawSha = example.record.artifacts.find((a) => a.format === 'raw')?.sha256 ?? '';
    standin = await startAwsStandIn({ dir: join(E2E_DIR, RUN_ID, 'aws-upstream-standin'), accessKeyId: AKID, secretAccessKey: SECRET });
    vendorAmi = await standin.addForeignImage({ region: 'eu-west-1', ownerId: VENDOR, name: 'debian-13-amd64-20261101-1', rawFile: artifact(example, 'raw') });
    // Newer and matching the name pattern, but of another account: never chosen, and refused by id.
    otherAmi = await standin.addForeignImage({ region: 'eu-west-1', ownerId: OTHER, name: 'debian-13-amd64-20261201-1', rawFile: artifact(example, 'raw') });
    env = { AWS_ACCESS_KEY_ID: AKID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_ENDPOINT_URL: standin.endpoint, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_EC2_METADATA_DISABLED: 'true' };
    // kiln build publishes the release as its last step (publish.aws.on_build), to another region.
    dir = repo('by-name', 'ec2://eu-west-1/debian-13-amd64-*', VENDOR, 'publish:\n  aws:\n    regions: [eu-west-2]\n    on_build: true\n');
    const lock = await kiln(['lock'], { cwd: dir, env });
    assert.equal(lock.code, 0, lock.stderr.slice(-4000));
    git(dir, 'add', '-A');
    execFileSync('git', ['-C', dir, '-c', 'user.email=e2e@kiln.test', '-c', 'user.name=Kiln E2E', 'commit', '-qm', 'kiln.lock'], { env: { ...process.env, GIT_AUTHOR_DATE: '2026-11-25T12:00:00Z', GIT_COMMITTER_DATE: '2026-11-25T12:00:00Z' } });
    git(dir, 'tag', TAG);
    const r = await kiln(['build', '--json'], { cwd: dir, env });
    assert.equal(r.code, 0, r.stderr.slice(-5000));
    rec = JSON.parse(r.stdout) as Rec;
  });
  after(async () => { await standin?.close(); });

  test("kiln lock pinned the AMI's id and its disk: the digest of the bytes in its snapshot", () => {
    const lock = readFileSync(join(dir, 'kiln.lock'), 'utf8');
    assert.match(lock, /url: "?ec2:\/\/eu-west-1\/debian-13-amd64-\*"?/);
    assert.match(lock, new RegExp(`ami: "?${vendorAmi}"?`), 'the AMI the pattern resolved to is pinned');
    // The vendor AMI holds the example's 2 GiB disk, a whole number of GiB: the volume read back is that disk.
    assert.match(lock, new RegExp(`sha256: "?${exampleRawSha}"?`));
  });

  test("the build used the pinned owner's newest matching AMI, checked by owner and by kiln.lock, and recorded its id", () => {
    assert.equal(rec.source.type, 'image');
    assert.equal(rec.source.ami?.imageId, vendorAmi);
    assert.equal(rec.source.ami?.owner, VENDOR);
    assert.equal(rec.source.sha256, exampleRawSha);
    assert.ok(rec.source.checks?.includes(`owner ${VENDOR} of ${vendorAmi} pinned in kiln.yaml`), String(rec.source.checks));
    assert.ok(rec.source.checks?.includes('sha256 pinned in kiln.lock'), String(rec.source.checks));
  });

  test('the foreign AMI was copied in, read block by block, and the copy removed with its snapshot; every request was valid', () => {
    const ops = standin.requests.map((q) => q.operation);
    for (const op of ['CopyImage', 'ListSnapshotBlocks', 'GetSnapshotBlock', 'DeregisterImage', 'DeleteSnapshot']) assert.ok(ops.includes(op), `${op} was called`);
    assert.ok(!ops.includes('RunInstances'), 'no instance is launched');
    assert.deepEqual(standin.images('eu-west-1').map((i) => i.imageId).sort(), [vendorAmi, otherAmi].sort(), 'nothing left behind');
    assert.equal(standin.snapshots('eu-west-1').filter((s) => s.ownerId === standin.accountId).length, 0);
    assert.deepEqual(standin.rejected, []);
  });

  test('kiln build published the release as an AMI as its last step (publish.aws.on_build), recorded on the release', async () => {
    const amis = standin.images('eu-west-2');
    assert.deepEqual(amis.map((i) => [i.name, i.tags.ImageVersion]), [[`ami-child-${TAG}`, TAG]]);
    const r = await kiln(['resolve', `ami-child@${TAG}`, '--cloud', 'aws'], { cwd: dir, env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), amis[0].imageId);
  });

  test('the image built on the AMI boots under UEFI with its own file and version', async () => {
    const qcow2 = rec.artifacts.find((a) => a.format === 'qcow2')?.file;
    assert.ok(qcow2);
    const vm = await bootVm({ image: qcow2, firmware: 'uefi', cpus: 1, timeoutSec: 480, cloudConfig: ['ssh_deletekeys: false', 'ssh_genkeytypes: []'] });
    try {
      assert.match((await vm.ssh('cat /etc/ami-child.conf')).stdout, /^built on an AMI$/m);
      assert.match((await vm.ssh('cat /etc/release')).stdout, new RegExp(`^IMAGE_VERSION=${TAG.replace(/\./g, '\\.')}$`, 'm'));
    } finally {
      await vm.stop();
    }
  });

  test('an AMI of another account than the pinned owner is refused before anything is read', async () => {
    const bad = repo('other-owner', `ec2://eu-west-1/${otherAmi}`, VENDOR);
    git(bad, 'tag', TAG);
    const gets = standin.requests.filter((q) => q.operation === 'GetSnapshotBlock').length;
    const r = await kiln(['build', '--snapshot', '--no-release'], { cwd: bad, env });
    assert.equal(r.code, 1, r.stderr.slice(-3000));
    assert.match(r.stderr, new RegExp(`${otherAmi} in eu-west-1 belongs to account ${OTHER}, not to ${VENDOR} pinned in source.image.owner`));
    assert.equal(standin.requests.filter((q) => q.operation === 'GetSnapshotBlock').length, gets);
  });

  test('an ec2:// source without a pinned owner is refused at kiln.yaml, naming the line', async () => {
    const bad = repo('no-owner', 'ec2://eu-west-1/debian-13-amd64-*', VENDOR);
    writeFileSync(join(bad, 'kiln.yaml'), readFileSync(join(bad, 'kiln.yaml'), 'utf8').replace(/ {4}owner: .*\n/, ''));
    const r = await kiln(['validate'], { cwd: bad, env });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /kiln\.yaml:4:\d+: source\.image\.url names an AMI: set source\.image\.owner/);
  });
});
