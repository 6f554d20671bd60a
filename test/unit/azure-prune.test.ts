/**
 * Three releases published to Azure, then `kiln prune --cloud azure`'s logic with keep 1 and a channel:
 * against Azurite (real storage) and the Azure gallery stand-in (test/support/azure-standin.ts: not
 * Azure; HTTPS with a self-signed certificate). Node trusts that certificate only through
 * NODE_EXTRA_CA_CERTS at start-up, so the Azure calls run in a child process started with it.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { BlobServiceClient } from '@azure/storage-blob';
import { openStore } from '../../src/store/index.js';
import { startAzureStandIn, type AzureStandIn } from '../support/azure-standin.js';
import { startAzurite, type Azurite } from '../support/azurite.js';
import { publishFake, scratch } from './store-fixtures.js';

const MIB = 1024 * 1024;
let dir: string;
let azurite: Azurite;
let arm: AzureStandIn;

before(async () => {
  dir = scratch('kiln-azure-prune-');
  azurite = await startAzurite(join(dir, 'azurite'));
  const blobs = () => BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('kiln-images');
  arm = await startAzureStandIn({
    dir: join(dir, 'arm'), resourceGroup: 'rg', pollsBeforeDone: 0,
    sourceExists: async (uri) => {
      const p = await blobs().getPageBlobClient(decodeURIComponent(new URL(uri).pathname.split('/').pop() ?? '')).getProperties().catch(() => undefined);
      return p?.contentLength === undefined ? undefined : { size: p.contentLength };
    },
  });
  arm.createGallery('kiln', 'westeurope');
});
after(async () => {
  await arm?.close();
  await azurite?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('prune keeps the newest and what a channel names, deletes the others with their blobs, never a version Kiln did not make', async () => {
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  const rels = [];
  for (const v of ['release-0.1.0', 'release-0.2.0', 'release-0.3.0']) {
    const r = await publishFake(store, dir, 'web', v, { sizes: { vhd: MIB + 512 } });
    const vhd = r.artifacts[0];
    rels.push({ name: 'web', version: v, digest: r.digest, commit: 'a'.repeat(40), vhdFile: vhd.file, vhdSha256: vhd.sha256, vhdSize: vhd.size, generation: 'V2' });
  }
  await store.channelSet('stable', 'web@release-0.1.0');
  const cfg = { subscription: arm.subscriptionId, resource_group: 'rg', location: 'westeurope', storage_account: 'devstoreaccount1', container: 'kiln-images', gallery: 'kiln', publisher: 'example', sku: 'trixie', regions: ['westeurope'], arm_endpoint: arm.endpoint };
  const dist = new URL('../../src/', import.meta.url).pathname;
  const script = join(dir, 'driver.mjs');
  writeFileSync(script, `
import { openStore } from '${dist}store/index.js';
import { publishVhdToAzure, computeClient } from '${dist}cloud/azure/publish.js';
import { pruneAzure } from '${dist}cloud/azure/prune.js';
import { silentLogger } from '${dist}log.js';
const [storeDir, base, cfgJson, relsJson] = process.argv.slice(2);
const cfg = JSON.parse(cfgJson);
const store = await openStore(storeDir, base);
for (const rel of JSON.parse(relsJson)) await publishVhdToAzure(store, rel, cfg, { logger: silentLogger });
// A version in the same image definition that Kiln did not make (no kiln tags).
const first = (await computeClient(cfg).galleryImageVersions.get('rg', 'kiln', 'web', '0.1.0')).storageProfile.osDiskImage.source;
await computeClient(cfg).galleryImageVersions.beginCreateOrUpdateAndWait('rg', 'kiln', 'web', '9.9.9', { location: 'westeurope', storageProfile: { osDiskImage: { source: first } }, publishingProfile: { targetRegions: [{ name: 'westeurope' }] } });
const rule = { keep: 1, keepDays: 0 };
const dry = await pruneAzure(store, 'web', cfg, { rule, apply: false, logger: silentLogger });
const done = await pruneAzure(store, 'web', cfg, { rule, apply: true, logger: silentLogger });
console.log(JSON.stringify({ dry, done }));
`);
  const out = await promisify(execFile)(process.execPath, [script, storeDir, dir, JSON.stringify(cfg), JSON.stringify(rels)], {
    encoding: 'utf8', timeout: 120_000,
    env: { PATH: process.env.PATH, NODE_EXTRA_CA_CERTS: arm.caFile, AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString, AZURE_TENANT_ID: arm.tenantId, AZURE_CLIENT_ID: arm.clientId, AZURE_CLIENT_SECRET: arm.clientSecret, AZURE_AUTHORITY_HOST: arm.endpoint, AZURE_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  const { dry, done } = JSON.parse(out.stdout) as { dry: { version: string; action: string; why: string }[]; done: { version: string; action: string }[] };
  assert.deepEqual(dry.map((d) => [d.version, d.action, d.why]).sort(), [
    ['release-0.1.0', 'keep', 'channel stable'], ['release-0.2.0', 'delete', 'older than the newest 1, on no channel'], ['release-0.3.0', 'keep', 'among the newest 1'],
  ], 'the version Kiln did not make is not even listed');
  assert.deepEqual(done.filter((d) => d.action === 'delete').map((d) => d.version), ['release-0.2.0']);
  assert.deepEqual(arm.versions('kiln', 'web').map((v) => v.name).sort(), ['0.1.0', '0.3.0', '9.9.9']);
  const blobs = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('kiln-images');
  assert.equal(await blobs.getPageBlobClient('web-release-0.2.0.vhd').exists(), false, 'the pruned version\'s blob is deleted');
  assert.equal(await blobs.getPageBlobClient('web-release-0.1.0.vhd').exists(), true);
  assert.equal(await blobs.getPageBlobClient('web-release-0.3.0.vhd').exists(), true);
  const reread = await openStore(storeDir, dir);
  assert.deepEqual((await reread.resolve('web@release-0.2.0', { verifyArtifacts: false })).cloudIds, {}, 'the id is gone from the signed metadata');
  assert.match((await reread.resolve('web@release-0.3.0', { verifyArtifacts: false })).cloudIds.azure?.westeurope ?? '', /\/versions\/0\.3\.0$/);
});
