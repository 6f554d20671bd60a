/**
 * kiln report's data and page, on a layout store with fake releases: a base and two versions of an
 * image built on it, signed, on a channel, published to a cloud, the second with step times and a
 * package whose name is markup. The page holds every section with that data, escapes what it shows,
 * loads nothing from anywhere (a CSP that forbids it; no URL in a src or href), and carries the chart
 * library only when there are step times.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { makeProvenance, makeSbom, openStore, type ReleaseRecord, type ReleaseStore } from '../../src/store/index.js';
import { loadSigner } from '../../src/store/signing.js';
import { releaseReport, storeIndex } from '../../src/report/data.js';
import { indexHtml, releaseHtml } from '../../src/report/html.js';
import { fakeArtifacts, fakeRecord, publishFake, scratch, sshKey } from './store-fixtures.js';

process.env.KILN_STATE_DIR = scratch('kiln-report-state-');
const kiln = fileURLToPath(new URL('../../../bin/kiln.js', import.meta.url));

async function publish(store: ReleaseStore, dir: string, record: ReleaseRecord, signKey?: string) {
  const artifacts = fakeArtifacts(dir, record.name, record.version, { raw: 4096, qcow2: 2048 });
  const full = { ...record, artifacts: artifacts.map((a) => ({ format: a.format, file: a.file.split('/').pop() ?? '', size: a.size, sha256: a.sha256 })) };
  return store.publish({ record, artifacts, sbom: makeSbom(full), provenance: makeProvenance(full, artifacts), signer: signKey ? await loadSigner(signKey) : undefined });
}

test('a release page and the store index: every section with the store\'s data, escaped, self-contained', async () => {
  const dir = scratch('kiln-report-');
  const key = sshKey(dir, 'ops');
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir, { signer: () => loadSigner(key.priv) });
  const base = await publishFake(store, dir, 'base', 'release-1.0', { sizes: { raw: 4096 } });
  const parent = { name: 'base', version: 'release-1.0', digest: base.digest };
  await publish(store, dir, fakeRecord('web', 'release-0.1.0', { parents: [parent] }), key.priv);
  const evil = '<script>alert(1)</script>';
  const r2 = fakeRecord('web', 'release-0.2.0', {
    parents: [parent], sourceDateEpoch: 1700000100,
    source: { packages: [{ name: 'openssh-server', version: '1:9.2p1-2+deb12u4', arch: 'amd64' }, { name: evil, version: '1.0', arch: 'all' }] },
    build: { hostTools: { 'qemu-utils': '1:7.2+dfsg-7' }, steps: [{ name: 'source', seconds: 12.5 }, { name: 'provision', seconds: 40.1 }, { name: 'formats', seconds: 9 }] },
  });
  const p2 = await publish(store, dir, r2, key.priv);
  await store.channelSet('stable', 'web@release-0.2.0');
  await store.addCloudIds('web@release-0.2.0', { aws: { 'eu-west-1': 'ami-0123456789abcdef0' } });

  const r = await releaseReport(store, 'web@release-0.2.0');
  assert.equal(r.digest, p2.digest);
  assert.deepEqual(r.artifacts.map((a) => a.format), ['raw', 'qcow2']);
  assert.equal(r.parent?.ref, 'base@release-1.0');
  assert.deepEqual(r.channels.map((c) => [c.channel, c.version, c.here]), [['stable', 'release-0.2.0', true]]);
  assert.deepEqual(r.cloudIds, { aws: { 'eu-west-1': 'ami-0123456789abcdef0' } });
  assert.deepEqual(r.signatures.map((s) => [/^SHA256:/.test(s.signer), s.valid, s.trusted]), [[true, true, false]], 'signed by a key the reader does not trust: its fingerprint');
  assert.equal(r.previous?.ref, 'web@release-0.1.0');
  assert.deepEqual(r.previous?.added.map((p) => p.name), [evil]);
  assert.deepEqual(r.previous?.removed.map((p) => p.name), ['bash']);
  assert.deepEqual(r.previous?.changed.map((c) => [c.name, c.from, c.to, c.direction]), [['openssh-server', '1:9.2p1-2+deb12u3', '1:9.2p1-2+deb12u4', 'upgrade']]);
  assert.equal(r.packages.find((p) => p.name === 'openssh-server')?.purl, 'pkg:deb/debian/openssh-server@1%3A9.2p1-2%2Bdeb12u4?arch=amd64');
  const first = await releaseReport(store, 'web@release-0.1.0');
  assert.equal(first.previous, undefined);
  assert.equal(first.steps, undefined);
  const baseReport = await releaseReport(store, 'base@release-1.0');
  assert.deepEqual(baseReport.children.map((c) => c.ref).sort(), ['web@release-0.1.0', 'web@release-0.2.0']);

  const html = releaseHtml(r);
  for (const id of ['summary', 'artifacts', 'published', 'signatures', 'ancestry', 'channels', 'changes', 'audit', 'provenance', 'timings', 'sbom']) assert.match(html, new RegExp(`<section id="${id}">`), id);
  assert.ok(!html.includes(evil), 'a package name is shown as text, never as markup');
  assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
  assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none';/);
  assert.deepEqual(html.match(/\b(src|href)="(https?:)?\/\/[^"]*"/g), null, 'nothing is loaded from anywhere');
  assert.match(html, /ami-0123456789abcdef0/);
  assert.match(html, new RegExp(`data-copy="${p2.digest}"`));
  assert.match(html, /<script type="application\/json" id="steps-data">\[\{"name":"source","seconds":12.5\}/);
  assert.match(html, /Chart\.js v4/, 'the chart library is inline');
  // The data block cannot be closed from inside: a step name with markup stays JSON.
  const tricky = releaseHtml({ ...r, steps: [{ name: '</script><b>x', seconds: 1 }] });
  assert.match(tricky, /"name":"\\u003c\/script\\u003e\\u003cb\\u003ex"/);
  assert.doesNotMatch(releaseHtml(first), /Chart\.js v4/, 'no chart library without step times');
  assert.match(releaseHtml(first), /does not record its step times/);
  assert.ok(Buffer.byteLength(html) < 400_000, `the page is small (${Buffer.byteLength(html)} bytes)`);

  const idx = indexHtml(await storeIndex(store));
  for (const ref of ['base@release-1.0', 'web@release-0.1.0', 'web@release-0.2.0']) assert.match(idx, new RegExp(`href="${encodeURIComponent(ref)}\\.html"`));
  assert.match(idx, /<td>stable<\/td>/);

  // The command: one page, and --index with a page per release beside index.html.
  const out = join(dir, 'pages');
  const run = spawnSync(process.execPath, [kiln, 'report', '--index', '--out', out, '--store', storeDir], { encoding: 'utf8', env: { ...process.env } });
  assert.equal(run.status, 0, run.stderr);
  for (const f of ['index.html', 'base@release-1.0.html', 'web@release-0.1.0.html', 'web@release-0.2.0.html']) assert.ok(existsSync(join(out, f)), f);
  assert.match(readFileSync(join(out, 'web@release-0.2.0.html'), 'utf8'), /href="web%40release-0\.1\.0\.html"/, 'linked pages link the previous version');
  const one = spawnSync(process.execPath, [kiln, 'report', 'web@release-0.1.0', '--store', storeDir, '--out', join(dir, 'one.html')], { encoding: 'utf8' });
  assert.equal(one.status, 0, one.stderr);
  assert.match(readFileSync(join(dir, 'one.html'), 'utf8'), /<h1>web@release-0\.1\.0/);
  const none = spawnSync(process.execPath, [kiln, 'report', 'web@release-9', '--store', storeDir], { encoding: 'utf8' });
  assert.equal(none.status, 1);
  assert.match(none.stderr, /no release web@release-9/);
});
