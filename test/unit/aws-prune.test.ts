import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Image } from '@aws-sdk/client-ec2';
import { decide } from '../../src/cloud/aws/prune.js';

const ami = (version: string, created: string, id = `ami-${version.replace(/\D/g, '').padStart(17, '0')}`): { region: string; image: Image } => ({
  region: 'eu-west-1',
  image: {
    ImageId: id, Name: `web-${version}`, CreationDate: created,
    Tags: [{ Key: 'ImageVersion', Value: version }, { Key: 'kiln:image', Value: 'web' }, { Key: 'kiln:release-digest', Value: 'sha256:x' }],
    BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: `snap-${version}` } }],
  },
});
const releases = [
  { version: 'release-0.1.0', date: '2026-10-01T00:00:00Z' },
  { version: 'release-0.2.0', date: '2026-10-10T00:00:00Z' },
  { version: 'release-0.10.0', date: '2026-11-20T00:00:00Z' },
];
const now = new Date('2026-12-01T00:00:00Z');

test('prune keeps the newest N releases (by date, not by string order) and deletes the rest with their snapshots', () => {
  const plan = decide([ami('release-0.1.0', '2026-10-01T00:00:00Z'), ami('release-0.2.0', '2026-10-10T00:00:00Z'), ami('release-0.10.0', '2026-11-20T00:00:00Z')], { releases, channelTargets: new Map() }, { keep: 1, keepDays: 0 }, now);
  assert.deepEqual(plan.map((d) => [d.version, d.action]), [['release-0.1.0', 'delete'], ['release-0.2.0', 'delete'], ['release-0.10.0', 'keep']]);
  assert.deepEqual(plan[0].snapshots, ['snap-release-0.1.0']);
});

test('prune keeps what a channel points at, what is younger than D days, and what the store does not know', () => {
  const plan = decide([
    ami('release-0.1.0', '2026-10-01T00:00:00Z'), ami('release-0.2.0', '2026-11-25T00:00:00Z'),
    ami('release-0.10.0', '2026-11-20T00:00:00Z'), ami('release-9.9.9', '2020-01-01T00:00:00Z'),
  ], { releases, channelTargets: new Map([['release-0.1.0', ['production']]]) }, { keep: 1, keepDays: 10 }, now);
  const why = Object.fromEntries(plan.map((d) => [d.version, `${d.action}: ${d.why}`]));
  assert.equal(why['release-0.1.0'], 'keep: channel production');
  assert.equal(why['release-0.2.0'], 'keep: younger than 10 days');
  assert.equal(why['release-0.10.0'], 'keep: among the newest 1');
  assert.equal(why['release-9.9.9'], 'keep: its version is not in the store');
  const older = decide([ami('release-0.2.0', '2026-11-01T00:00:00Z')], { releases, channelTargets: new Map() }, { keep: 1, keepDays: 10 }, now);
  assert.equal(older[0].action, 'delete');
});
