/**
 * Release ancestry in the store: a child names its parent in its manifest, inherits its ancestors'
 * revocations (resolve refuses, listings say so) and learns when its parent is superseded.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { KilnError } from '../../src/errors.js';
import { checkAncestry, makeProvenance, makeSbom, openStore, type ReleaseListing, type ReleaseParent, type ReleaseStore } from '../../src/store/index.js';
import { MAX_ANCESTRY_DEPTH, walkAncestry, type AncestorLookup, type AncestorNode } from '../../src/store/ancestry.js';
import { releaseTree } from '../../src/cli/releases.js';
import { fakeArtifacts, fakeRecord, publishFake, scratch } from './store-fixtures.js';

// Readers remember the metadata they saw (seen.ts): keep that out of the user's state directory.
process.env.KILN_STATE_DIR = scratch('kiln-ancestry-state-');

const kiln = fileURLToPath(new URL('../../../bin/kiln.js', import.meta.url));
const SMALL = { raw: 4096 };

async function freshStore(): Promise<{ dir: string; storeDir: string; store: ReleaseStore }> {
  const dir = scratch('kiln-ancestry-');
  const storeDir = join(dir, 'store');
  return { dir, storeDir, store: await openStore(storeDir, dir) };
}

/** Publishes name@version, built on `parent` when given; returns it as a child's record would name it. */
async function release(s: { dir: string; store: ReleaseStore }, name: string, version: string, parent?: ReleaseParent): Promise<ReleaseParent> {
  const { digest } = await publishFake(s.store, s.dir, name, version, { sizes: SMALL, parent });
  return { name, version, digest };
}

function byRef(list: ReleaseListing[]): Record<string, ReleaseListing> {
  return Object.fromEntries(list.map((l) => [`${l.name}@${l.version}`, l]));
}

test('a child release manifest carries org.opencontainers.image.base.name and base.digest of its parent; a release without a parent carries neither', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'release-1.0');
  const child = await release(s, 'web', 'release-0.1.0', { ...base, channel: 'stable' });
  const c = await s.store.release('web', child.version);
  assert.equal(c?.manifest.annotations?.['org.opencontainers.image.base.name'], 'base@release-1.0');
  assert.equal(c?.manifest.annotations?.['org.opencontainers.image.base.digest'], base.digest);
  assert.deepEqual(c?.record.parents, [{ name: 'base', version: 'release-1.0', digest: base.digest, channel: 'stable' }]);
  const b = await s.store.release('base', base.version);
  assert.deepEqual(Object.keys(b?.manifest.annotations ?? {}).filter((k) => k.startsWith('org.opencontainers.image.base.')), []);
});

test('publish refuses a record with two parents, or a parent without a sha256 digest', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'v1');
  const publish = (parents: ReleaseParent[]) => {
    const artifacts = fakeArtifacts(s.dir, 'web', 'v1', SMALL);
    const record = fakeRecord('web', 'v1', { parents });
    return s.store.publish({ record, artifacts, sbom: makeSbom(record), provenance: makeProvenance(record, artifacts) });
  };
  await assert.rejects(publish([base, base]), /2 parents; a child release is built on exactly one/);
  await assert.rejects(publish([{ ...base, digest: 'latest' }]), /parent base@v1: digest must be sha256/);
  assert.equal(await s.store.exists('web', 'v1'), false);
});

test('a grandchild of a revoked base is refused by resolve, naming the base and its reason', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'v1');
  const mid = await release(s, 'mid', 'v1', base);
  await release(s, 'app', 'v1', mid);
  assert.equal((await s.store.resolve('app@v1', { format: 'raw' })).revokedAncestor, undefined);
  await s.store.revoke('base@v1', 'CVE-2024-6387 in openssh');
  await assert.rejects(s.store.resolve('app@v1', { format: 'raw' }), (e: Error) => {
    assert.ok(e instanceof KilnError);
    assert.match(e.message, /app@v1 is built on base@v1, which is revoked: CVE-2024-6387 in openssh/);
    assert.match(e.detail ?? '', /app@v1 <- mid@v1 <- base@v1/);
    assert.match(e.hint ?? '', /release of base that is not revoked.*--force/);
    return true;
  });
  await assert.rejects(s.store.resolve('mid@v1', { format: 'raw' }), /mid@v1 is built on base@v1, which is revoked/);
  const l = byRef(await s.store.list());
  assert.equal(l['base@v1'].status, 'revoked');
  for (const ref of ['mid@v1', 'app@v1']) {
    assert.equal(l[ref].status, 'ancestor-revoked', ref);
    assert.equal(l[ref].reason, 'base@v1 is revoked: CVE-2024-6387 in openssh');
  }
  assert.equal(l['app@v1'].parent, 'mid@v1');
  assert.equal(l['base@v1'].parent, undefined);
});

test('--force resolves a release whose ancestor is revoked and returns that ancestor for the warning', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'v1');
  const mid = await release(s, 'mid', 'v1', base);
  const app = await release(s, 'app', 'v1', mid);
  await s.store.revoke('base@v1', 'kernel panic on boot');
  const r = await s.store.resolve('app@v1', { format: 'raw', force: true });
  assert.equal(r.digest, app.digest);
  assert.equal(r.revoked, undefined, 'the release itself is not revoked');
  assert.deepEqual(r.revokedAncestor, { name: 'base', version: 'v1', digest: base.digest, reason: 'kernel panic on boot' });
});

test('a release\'s own revocation keeps priority over an inherited one; the nearest revoked ancestor is named', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'v1');
  const mid = await release(s, 'mid', 'v1', base);
  await release(s, 'app', 'v1', mid);
  await s.store.revoke('base@v1', 'old openssl');
  await s.store.revoke('mid@v1', 'broken nginx config');
  const l = byRef(await s.store.list());
  assert.deepEqual([l['mid@v1'].status, l['mid@v1'].reason], ['revoked', 'broken nginx config']);
  assert.deepEqual([l['app@v1'].status, l['app@v1'].reason], ['ancestor-revoked', 'mid@v1 is revoked: broken nginx config']);
  await assert.rejects(s.store.resolve('app@v1'), /built on mid@v1, which is revoked: broken nginx config/);
});

test('a newer, not revoked version of the parent marks the child out of date, by the numbers in the tag', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'release-1.10');
  await release(s, 'web', 'v1', base);
  const status = async () => byRef(await s.store.list())['web@v1'];
  assert.equal((await status()).status, 'ok');
  await release(s, 'base', 'release-1.9');
  assert.equal((await status()).status, 'ok', 'release-1.9 is older than release-1.10, though published later');
  await release(s, 'base', 'release-1.11');
  await s.store.revoke('base@release-1.11', 'bad kernel');
  assert.equal((await status()).status, 'ok', 'a revoked newer version is no reason to rebuild');
  await release(s, 'base', 'release-1.12');
  const stale = await status();
  assert.equal(stale.status, 'out-of-date');
  assert.equal(stale.reason, 'base@release-1.12 is newer than base@release-1.10');
  // The release itself still resolves: out of date is advice, not a refusal.
  assert.equal((await s.store.resolve('web@v1', { format: 'raw' })).version, 'v1');
});

test('moving the channel a child was built from marks it out of date; newer versions off the channel do not', async () => {
  const s = await freshStore();
  const v1 = await release(s, 'base', 'v1');
  await s.store.channelSet('stable', 'base@v1');
  await release(s, 'web', 'r1', { ...v1, channel: 'stable' });
  await release(s, 'base', 'v2');
  const web = async () => byRef(await s.store.list())['web@r1'];
  assert.equal((await web()).status, 'ok', 'base@stable still points at v1');
  await s.store.channelSet('stable', 'base@v2');
  const moved = await web();
  assert.equal(moved.status, 'out-of-date');
  assert.equal(moved.reason, 'base@stable now points at v2, not v1');
  assert.equal(moved.parent, 'base@v1');
});

test('a parent missing from the store is reported in the reason, not an error', async () => {
  const s = await freshStore();
  const gone: ReleaseParent = { name: 'base', version: 'v1', digest: `sha256:${'f'.repeat(64)}` };
  await release(s, 'web', 'r1', gone);
  const l = byRef(await s.store.list())['web@r1'];
  assert.equal(l.status, 'ok');
  assert.equal(l.parent, 'base@v1');
  assert.equal(l.reason, `its parent base@v1 (${gone.digest}) is not in this store`);
  assert.equal((await s.store.resolve('web@r1', { format: 'raw' })).revokedAncestor, undefined);
});

test('a parent digest that is another image\'s release is a problem: listed, and refused by resolve unless forced', async () => {
  const s = await freshStore();
  const other = await release(s, 'other', 'v1');
  await release(s, 'web', 'r1', { name: 'base', version: 'v1', digest: other.digest });
  const l = byRef(await s.store.list())['web@r1'];
  assert.match(l.reason ?? '', /cannot read base@v1: base@sha256:[0-9a-f]{64} holds a release of 'other'/);
  await assert.rejects(s.store.resolve('web@r1', { format: 'raw' }), /refusing web@r1: cannot read base@v1/);
  const forced = await s.store.resolve('web@r1', { format: 'raw', force: true });
  assert.match(forced.ancestryProblem ?? '', /holds a release of 'other'/);
});

test('checkAncestry returns the chain from a release up to its root and the nearest revoked release, with or without its name', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'v1');
  const mid = await release(s, 'mid', 'v1', { ...base, channel: 'stable' });
  const app = await release(s, 'app', 'v1', mid);
  const plain = await checkAncestry(s.store, app.digest);
  assert.deepEqual(plain.chain, [app, mid, { ...base, channel: 'stable' }]);
  assert.equal(plain.revoked, undefined);
  await s.store.revoke('base@v1', 'CVE-2024-0001');
  const named = await checkAncestry(s.store, mid.digest, 'mid');
  assert.deepEqual(named.chain.map((p) => `${p.name}@${p.version}`), ['mid@v1', 'base@v1']);
  assert.deepEqual(named.revoked, { name: 'base', version: 'v1', digest: base.digest, reason: 'CVE-2024-0001' });
  await assert.rejects(checkAncestry(s.store, `sha256:${'0'.repeat(64)}`), /no release sha256:0{64} in /);
  await assert.rejects(checkAncestry(s.store, 'base@v1'), /expected a release digest/);
});

/** A fake store for the walk: releases by digest, each naming the parent it was built on. */
function fakeLookup(nodes: { name: string; version: string; digest: string; parent?: { name: string; version: string; digest?: string } }[]): { lookup: AncestorLookup; asked: string[] } {
  const asked: string[] = [];
  const lookup: AncestorLookup = async (ref) => {
    asked.push(`${ref.name} ${ref.digest ?? ref.version}`);
    const n = nodes.find((x) => x.name === ref.name && (ref.digest ? x.digest === ref.digest : x.version === ref.version));
    if (!n) return null;
    const node: AncestorNode = { name: n.name, version: n.version, digest: n.digest, record: fakeRecord(n.name, n.version, { parents: n.parent ? [n.parent as ReleaseParent] : [] }) };
    return node;
  };
  return { lookup, asked };
}

const D = (c: string) => `sha256:${c.repeat(64)}`;

test('a cycle of recorded parents ends the ancestry walk with a problem instead of looping', async () => {
  const { lookup } = fakeLookup([
    { name: 'a', version: 'v1', digest: D('a'), parent: { name: 'b', version: 'v1', digest: D('b') } },
    { name: 'b', version: 'v1', digest: D('b'), parent: { name: 'a', version: 'v1', digest: D('a') } },
  ]);
  const w = await walkAncestry({ name: 'a', digest: D('a') }, lookup);
  assert.deepEqual(w.chain.map((p) => p.name), ['a', 'b']);
  assert.match(w.problem ?? '', /a@v1 is its own ancestor/);
});

test('an ancestry longer than MAX_ANCESTRY_DEPTH ends with a problem', async () => {
  const hex = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;
  const nodes = Array.from({ length: MAX_ANCESTRY_DEPTH + 5 }, (_, i) => ({ name: 'x', version: `v${i}`, digest: hex(i), parent: { name: 'x', version: `v${i + 1}`, digest: hex(i + 1) } }));
  const w = await walkAncestry({ name: 'x', digest: hex(0) }, fakeLookup(nodes).lookup);
  assert.equal(w.chain.length, MAX_ANCESTRY_DEPTH);
  assert.match(w.problem ?? '', /longer than 64 releases/);
});

test('a parent recorded without a digest (a record older than ancestry) is looked up by its version', async () => {
  const { lookup, asked } = fakeLookup([
    { name: 'web', version: 'r1', digest: D('1'), parent: { name: 'base', version: 'v1' } },
    { name: 'base', version: 'v1', digest: D('2') },
  ]);
  const w = await walkAncestry({ name: 'web', digest: D('1') }, lookup);
  assert.deepEqual(w.chain, [{ name: 'web', version: 'r1', digest: D('1') }, { name: 'base', version: 'v1', digest: D('2') }]);
  assert.deepEqual(asked, [`web ${D('1')}`, 'base v1']);
  assert.equal(w.problem, undefined);
});

test('a parent entry that is not a release reference is a problem, never a lookup', async () => {
  const { lookup, asked } = fakeLookup([{ name: 'web', version: 'r1', digest: D('1'), parent: { name: '../../etc', version: 'v1', digest: D('2') } }]);
  const w = await walkAncestry({ name: 'web', digest: D('1') }, lookup);
  assert.match(w.problem ?? '', /records a parent that is not a release reference/);
  assert.deepEqual(asked, [`web ${D('1')}`]);
});

test('the release tree puts roots first and each child under its parent, in listing order', () => {
  const row = (ref: string, status: ReleaseListing['status'], parent?: string, reason?: string) => {
    const [name, version] = ref.split('@');
    return { name, version, status, ...(parent ? { parent } : {}), ...(reason ? { reason } : {}) };
  };
  const list = [
    row('app@v1', 'ancestor-revoked', 'mid@v1', 'base@v1 is revoked: cve'),
    row('base@v1', 'revoked', undefined, 'cve'),
    row('base@v2', 'ok'),
    row('mid@v1', 'ancestor-revoked', 'base@v1', 'base@v1 is revoked: cve'),
    row('mid@v2', 'ok', 'base@v2'),
    row('solo@v1', 'ok', 'other@v9'),
  ];
  assert.equal(releaseTree(list), [
    'base@v1  revoked: cve',
    '  mid@v1  ancestor-revoked: base@v1 is revoked: cve',
    '    app@v1  ancestor-revoked: base@v1 is revoked: cve',
    'base@v2  ok',
    '  mid@v2  ok',
    'solo@v1  ok (built on other@v9)',
  ].join('\n') + '\n');
  // A cycle (a tampered store) is still drawn, each release once.
  assert.equal(releaseTree([row('a@v1', 'ok', 'b@v1'), row('b@v1', 'ok', 'a@v1')]), 'a@v1  ok\n  b@v1  ok\n');
  assert.equal(releaseTree([]), '');
});

test('kiln releases shows PARENT and --tree; kiln resolve refuses a revoked ancestor and warns under --force', async () => {
  const s = await freshStore();
  const base = await release(s, 'base', 'v1');
  await release(s, 'web', 'r1', base);
  await s.store.revoke('base@v1', 'CVE-2024-6387');
  const run = (args: string[], input?: string) => spawnSync(process.execPath, [kiln, ...args, ...(input ? [] : ['--store', s.storeDir])], { encoding: 'utf8', input });
  const ls = run(['releases']);
  assert.equal(ls.status, 0, ls.stderr);
  assert.match(ls.stdout, /^NAME\s+VERSION\s+DATE\s+COMMIT\s+FORMATS\s+SOURCE\s+SIGNER\s+PARENT\s+PUBLISHED\s+STATUS\n/);
  assert.match(ls.stdout, /\nbase\s+v1\s.*\s-\s+revoked: CVE-2024-6387\n/);
  assert.match(ls.stdout, /\nweb\s+r1\s.*\sbase@v1\s+-\s+ancestor-revoked: base@v1 is revoked: CVE-2024-6387\n/);
  const tree = run(['releases', '--tree']);
  assert.equal(tree.stdout, 'base@v1  revoked: CVE-2024-6387\n  web@r1  ancestor-revoked: base@v1 is revoked: CVE-2024-6387\n');
  const refused = run(['resolve', 'web@r1', '--format', 'raw']);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /web@r1 is built on base@v1, which is revoked: CVE-2024-6387/);
  const forced = run(['resolve', 'web@r1', '--format', 'raw', '--force']);
  assert.equal(forced.status, 0, forced.stderr);
  assert.match(forced.stderr, /warning: web@r1 is built on base@v1, which is revoked \(CVE-2024-6387\); used because of --force/);
  const tf = run(['resolve', '--terraform'], JSON.stringify({ release: 'web@r1', store: s.storeDir, force: 'true' }));
  assert.equal(tf.status, 0, tf.stderr);
  assert.equal((JSON.parse(tf.stdout) as Record<string, string>).revoked_ancestor, 'base@v1');
});
