import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ClientSecretCredential } from '@azure/identity';
import { ComputeManagementClient, type GalleryImage, type GalleryImageVersion } from '@azure/arm-compute';
import { startAzureStandIn, type AzureStandIn } from '../support/azure-standin.js';

const MIB = 1024 * 1024;
const RG = 'kiln-rg';
const GALLERY = 'kilnGallery';
const LOCATION = 'westeurope';
const ACCOUNT_ID = '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/kiln-rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1';
const BLOB = 'http://127.0.0.1:10000/devstoreaccount1/images';
const POLL = { updateIntervalInMs: 10 }; // core-lro ignores Retry-After: 0 and would wait 2 s per poll
const ARM_SCOPE = 'https://management.azure.com/.default';

/** Blobs the stand-in's sourceExists sees: uri → size. */
const BLOBS = new Map<string, number>([
  [`${BLOB}/kiln-0.1.0.vhd`, 8 * MIB + 512],
  [`${BLOB}/kiln-0.2.0.vhd`, 8 * MIB + 512],
  [`${BLOB}/odd.vhd`, 8 * MIB + 1024],
  [`${BLOB}/raw.img`, 8 * MIB],
]);

async function withStandIn(fn: (s: AzureStandIn, dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-azst-'));
  const standIn = await startAzureStandIn({
    dir, resourceGroup: RG, location: LOCATION,
    sourceExists: async (uri) => (BLOBS.has(uri) ? { size: BLOBS.get(uri)! } : undefined),
  });
  standIn.createGallery(GALLERY, LOCATION);
  try { await fn(standIn, dir); } finally {
    await standIn.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** In-process: the SDKs' pipeline option `agent` carries the stand-in's CA (NODE_EXTRA_CA_CERTS is read only at start-up). */
function sdk(s: AzureStandIn, secret = s.clientSecret): { credential: ClientSecretCredential; client: ComputeManagementClient } {
  const agent = new Agent({ ca: readFileSync(s.caFile) });
  const credential = new ClientSecretCredential(s.tenantId, s.clientId, secret, { authorityHost: s.endpoint, disableInstanceDiscovery: true, agent });
  return { credential, client: new ComputeManagementClient(credential, s.subscriptionId, { endpoint: s.endpoint, agent }) };
}

const imageDefinition = (hyperVGeneration: 'V1' | 'V2', sku = 'debian-12'): GalleryImage => ({
  location: LOCATION, tags: { kiln: 'yes' }, osType: 'Linux', osState: 'Generalized', hyperVGeneration, architecture: 'x64',
  identifier: { publisher: 'kiln', offer: 'base', sku }, features: [{ name: 'SecurityType', value: 'TrustedLaunchSupported' }],
});

const imageVersion = (blob: string, tags: Record<string, string> = {}): GalleryImageVersion => ({
  location: LOCATION, tags,
  storageProfile: { osDiskImage: { source: { uri: `${BLOB}/${blob}`, storageAccountId: ACCOUNT_ID } } },
  publishingProfile: { targetRegions: [{ name: 'West Europe', regionalReplicaCount: 1, storageAccountType: 'Standard_LRS' }], excludeFromLatest: false },
});

/** What `fn` rejects with, as the SDK surfaces it. */
async function refusal(fn: () => Promise<unknown>): Promise<{ name: string; code?: string; statusCode?: number; message: string }> {
  try { await fn(); } catch (e) {
    const err = e as Error & { code?: string; statusCode?: number };
    return { name: err.name, message: err.message, ...(err.code ? { code: err.code } : {}), ...(err.statusCode ? { statusCode: err.statusCode } : {}) };
  }
  throw new Error('expected a refusal');
}

/** A bare HTTPS request trusting the stand-in's CA. */
function raw(s: AzureStandIn, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: { error?: { code?: string; message?: string } } }> {
  return new Promise((resolve, reject) => {
    const req = request(`${s.endpoint}${path}`, { method: 'GET', ca: readFileSync(s.caFile), headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as { error?: { code?: string } } }));
    });
    req.on('error', reject);
    req.end();
  });
}

// The SDK part run the way Kiln runs: a separate Node process, the CA trusted through NODE_EXTRA_CA_CERTS,
// DefaultAzureCredential configured by the environment (EnvironmentCredential).
const CHILD = `
const [identityUrl, computeUrl] = process.argv.slice(2);
const { DefaultAzureCredential } = await import(identityUrl);
const { ComputeManagementClient } = await import(computeUrl);
const { rg, gallery, image, version, location, endpoint, blob, accountId } = JSON.parse(process.env.KILN_AZST);
const poll = { updateIntervalInMs: 10 };
const out = {};
try {
  const credential = new DefaultAzureCredential({ disableInstanceDiscovery: true });
  out.token = (await credential.getToken('https://management.azure.com/.default')).token.length > 0;
  const client = new ComputeManagementClient(credential, process.env.AZURE_SUBSCRIPTION_ID, { endpoint });
  const created = await client.galleryImages.beginCreateOrUpdateAndWait(rg, gallery, image, {
    location, osType: 'Linux', osState: 'Generalized', hyperVGeneration: 'V2', architecture: 'x64',
    identifier: { publisher: 'kiln', offer: 'base', sku: 'debian-12' }, features: [{ name: 'SecurityType', value: 'TrustedLaunchSupported' }],
  }, poll);
  out.imageCreated = created.provisioningState;
  const read = await client.galleryImages.get(rg, gallery, image);
  out.imageRead = { hyperVGeneration: read.hyperVGeneration, identifier: read.identifier, provisioningState: read.provisioningState };
  const v = await client.galleryImageVersions.beginCreateOrUpdateAndWait(rg, gallery, image, version, {
    location, tags: { ImageVersion: 'release-0.1.0', Kiln: 'yes' },
    storageProfile: { osDiskImage: { source: { uri: blob, storageAccountId: accountId } } },
    publishingProfile: { targetRegions: [{ name: location, regionalReplicaCount: 1, storageAccountType: 'Standard_LRS' }], excludeFromLatest: false },
  }, poll);
  out.versionCreated = { provisioningState: v.provisioningState, tags: v.tags };
  const got = await client.galleryImageVersions.get(rg, gallery, image, version, { expand: 'ReplicationStatus' });
  out.versionRead = { provisioningState: got.provisioningState, tags: got.tags, source: got.storageProfile.osDiskImage.source.uri,
    replication: got.replicationStatus, targetRegions: got.publishingProfile.targetRegions.map((t) => t.name) };
  out.listed = [];
  for await (const x of client.galleryImageVersions.listByGalleryImage(rg, gallery, image)) out.listed.push(x.name);
  await client.galleryImageVersions.beginDeleteAndWait(rg, gallery, image, version, poll);
  try { await client.galleryImageVersions.get(rg, gallery, image, version); out.afterDelete = 'still there'; }
  catch (e) { out.afterDelete = { name: e.name, code: e.code, statusCode: e.statusCode }; }
  process.env.AZURE_CLIENT_SECRET = 'not-the-secret';
  try { await new DefaultAzureCredential({ disableInstanceDiscovery: true }).getToken('https://management.azure.com/.default'); out.wrongSecret = 'accepted'; }
  catch (e) { out.wrongSecret = { name: e.name, message: e.message }; }
} catch (e) {
  out.error = { name: e.name, code: e.code, statusCode: e.statusCode, message: e.message };
}
console.log(JSON.stringify(out));
`;

interface ChildOut {
  token?: boolean; imageCreated?: string; error?: { message: string };
  imageRead?: { hyperVGeneration: string; identifier: { publisher: string; offer: string; sku: string }; provisioningState: string };
  versionCreated?: { provisioningState: string; tags: Record<string, string> };
  versionRead?: { provisioningState: string; tags: Record<string, string>; source: string; targetRegions: string[]; replication: { aggregatedState: string; summary: { region: string; state: string }[] } };
  listed?: string[]; afterDelete?: { name: string; code: string; statusCode: number } | string;
  wrongSecret?: { name: string; message: string } | string;
}

test('a child process with NODE_EXTRA_CA_CERTS and DefaultAzureCredential creates, reads, lists and deletes through the LROs', async () => {
  await withStandIn(async (s, dir) => {
    const script = join(dir, 'sdk-child.mjs');
    writeFileSync(script, CHILD);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'], HOME: dir,
      NODE_EXTRA_CA_CERTS: s.caFile,
      AZURE_TENANT_ID: s.tenantId, AZURE_CLIENT_ID: s.clientId, AZURE_CLIENT_SECRET: s.clientSecret, AZURE_AUTHORITY_HOST: s.endpoint,
      AZURE_SUBSCRIPTION_ID: s.subscriptionId,
      KILN_AZST: JSON.stringify({
        rg: RG, gallery: GALLERY, image: 'kiln-debian', version: '0.1.0', location: LOCATION, endpoint: s.endpoint,
        blob: `${BLOB}/kiln-0.1.0.vhd`, accountId: ACCOUNT_ID,
      }),
    };
    const { stdout } = await promisify(execFile)(process.execPath, [script, import.meta.resolve('@azure/identity'), import.meta.resolve('@azure/arm-compute')], { env, timeout: 15_000 });
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as ChildOut;
    assert.equal(out.error, undefined, out.error?.message);
    assert.equal(out.token, true);
    assert.equal(out.imageCreated, 'Succeeded');
    assert.deepEqual(out.imageRead, { hyperVGeneration: 'V2', identifier: { publisher: 'kiln', offer: 'base', sku: 'debian-12' }, provisioningState: 'Succeeded' });
    assert.deepEqual(out.versionCreated, { provisioningState: 'Succeeded', tags: { ImageVersion: 'release-0.1.0', Kiln: 'yes' } });
    assert.equal(out.versionRead?.provisioningState, 'Succeeded');
    assert.deepEqual(out.versionRead?.tags, { ImageVersion: 'release-0.1.0', Kiln: 'yes' });
    assert.equal(out.versionRead?.source, `${BLOB}/kiln-0.1.0.vhd`);
    assert.deepEqual(out.versionRead?.targetRegions, ['West Europe']);
    assert.deepEqual(out.versionRead?.replication, { aggregatedState: 'Completed', summary: [{ region: 'West Europe', state: 'Completed', details: '', progress: 100 }] });
    assert.deepEqual(out.listed, ['0.1.0']);
    assert.deepEqual(out.afterDelete, { name: 'RestError', code: 'ResourceNotFound', statusCode: 404 });
    assert.deepEqual(s.versions(GALLERY, 'kiln-debian'), []);
    assert.equal(typeof out.wrongSecret, 'object');
    const wrongSecret = out.wrongSecret as { name: string; message: string };
    assert.equal(wrongSecret.name, 'AuthenticationError', 'EnvironmentCredential stops the chain');
    assert.match(wrongSecret.message, /AADSTS7000215/);

    // The wire: Entra discovery + token; every ARM call with the SDK's api-version; the LROs polled (2 × InProgress, then Succeeded).
    const token = s.requests.find((r) => r.method === 'POST');
    assert.deepEqual(token?.path, `/${s.tenantId}/oauth2/v2.0/token`);
    assert.equal((token?.body as Record<string, string>)['scope'], ARM_SCOPE);
    assert.equal((token?.body as Record<string, string>)['client_secret'], undefined, 'the secret is not logged');
    const arm = s.requests.filter((r) => r.path.startsWith('/subscriptions/'));
    assert.ok(arm.every((r) => r.apiVersion === '2025-03-03'), 'api-version 2025-03-03 everywhere');
    const put = arm.find((r) => r.method === 'PUT' && r.path.endsWith('/versions/0.1.0'));
    assert.deepEqual((put?.body as { properties: { storageProfile: unknown } }).properties.storageProfile,
      { osDiskImage: { source: { uri: `${BLOB}/kiln-0.1.0.vhd`, storageAccountId: ACCOUNT_ID } } });
    const polls = arm.filter((r) => r.path.includes('/capsOperations/'));
    assert.equal(polls.length, 9, 'three LROs (image, version, delete) × three polls');
    assert.deepEqual(s.rejected.map((r) => [r.status, r.code]), [[404, 'ResourceNotFound'], [401, 'invalid_client']]);
  });
});

test('refusals: version name format, hyperVGeneration change, duplicate identifier, VHD checks, source change, failed replication', async () => {
  await withStandIn(async (s) => {
    const { client } = sdk(s);
    const image = await client.galleryImages.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', imageDefinition('V2'), POLL);
    assert.equal(image.provisioningState, 'Succeeded');
    assert.deepEqual(s.images(GALLERY), [{ name: 'kiln-debian', hyperVGeneration: 'V2', identifier: { publisher: 'kiln', offer: 'base', sku: 'debian-12' }, tags: { kiln: 'yes' } }]);

    const badName = await refusal(() => client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', 'release-0.1.0', imageVersion('kiln-0.1.0.vhd'), POLL));
    assert.equal(badName.code, 'InvalidParameter');
    assert.equal(badName.statusCode, 400);
    assert.match(badName.message, /Major\(int32\)\.Minor\(int32\)\.Patch\(int32\)/);
    const overflow = await refusal(() => client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', '1.0.2147483648', imageVersion('kiln-0.1.0.vhd'), POLL));
    assert.equal(overflow.code, 'InvalidParameter');

    const gen = await refusal(() => client.galleryImages.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', imageDefinition('V1'), POLL));
    assert.deepEqual([gen.statusCode, gen.code], [400, 'PropertyChangeNotAllowed']);
    assert.match(gen.message, /hyperVGeneration/);
    const dup = await refusal(() => client.galleryImages.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian-copy', imageDefinition('V2'), POLL));
    assert.deepEqual([dup.statusCode, dup.code], [409, 'Conflict']);
    const trusted = await refusal(() => client.galleryImages.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-gen1', imageDefinition('V1', 'gen1'), POLL));
    assert.match(trusted.message, /requires hyperVGeneration 'V2'/);

    for (const [blob, pattern] of [['odd.vhd', /N MiB \+ 512/], ['missing.vhd', /does not exist/], ['raw.img', /must end in '\.vhd'/]] as const) {
      const r = await refusal(() => client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', '0.0.9', imageVersion(blob), POLL));
      assert.deepEqual([r.statusCode, r.code], [400, 'InvalidParameter'], blob);
      assert.match(r.message, pattern);
    }
    const elsewhere = imageVersion('kiln-0.1.0.vhd');
    elsewhere.publishingProfile = { targetRegions: [{ name: 'North Europe' }] };
    assert.match((await refusal(() => client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', '0.0.9', elsewhere, POLL))).message, /must include the source region 'West Europe'/);
    assert.deepEqual(s.versions(GALLERY, 'kiln-debian'), [], 'no refused version is left behind');

    // The non-deprecated PollerLike works as well.
    const v1 = await client.galleryImageVersions.createOrUpdate(RG, GALLERY, 'kiln-debian', '0.1.0', imageVersion('kiln-0.1.0.vhd', { Kiln: 'yes' }), POLL);
    assert.equal(v1.provisioningState, 'Succeeded');
    const moved = await refusal(() => client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', '0.1.0', imageVersion('kiln-0.2.0.vhd'), POLL));
    assert.deepEqual([moved.statusCode, moved.code], [409, 'Conflict']);
    const retag = await client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', '0.1.0', imageVersion('kiln-0.1.0.vhd', { Kiln: 'yes', Retired: 'no' }), POLL);
    assert.deepEqual(retag.tags, { Kiln: 'yes', Retired: 'no' });

    s.failNextVersion('the disk is haunted');
    const failed = await refusal(() => client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', '0.2.0', imageVersion('kiln-0.2.0.vhd'), POLL));
    assert.match(failed.message, /ReplicationJobsNotCompleted.*the disk is haunted/);
    const status = await client.galleryImageVersions.get(RG, GALLERY, 'kiln-debian', '0.2.0', { expand: 'ReplicationStatus' });
    assert.equal(status.provisioningState, 'Failed');
    assert.equal(status.replicationStatus?.aggregatedState, 'Failed');
    assert.deepEqual(s.versions(GALLERY, 'kiln-debian').map((v) => [v.name, v.provisioningState, v.targetRegions]),
      [['0.1.0', 'Succeeded', ['westeurope']], ['0.2.0', 'Failed', ['westeurope']]]);

    // While an operation is under way the resource shows it, and a second PUT is refused.
    const poller = await client.galleryImageVersions.beginDelete(RG, GALLERY, 'kiln-debian', '0.2.0', POLL);
    assert.equal((await client.galleryImageVersions.get(RG, GALLERY, 'kiln-debian', '0.2.0')).provisioningState, 'Deleting');
    const busy = await refusal(() => client.galleryImageVersions.beginCreateOrUpdateAndWait(RG, GALLERY, 'kiln-debian', '0.2.0', imageVersion('kiln-0.2.0.vhd'), POLL));
    assert.deepEqual([busy.statusCode, busy.code], [409, 'OperationNotAllowed']);
    await poller.pollUntilDone();
    assert.deepEqual(s.versions(GALLERY, 'kiln-debian').map((v) => v.name), ['0.1.0']);
  });
});

test('a wrong client secret, a missing or foreign token, a missing api-version and another subscription are refused', async () => {
  await withStandIn(async (s) => {
    // ClientSecretCredential surfaces MSAL's server error as AuthenticationRequiredError (EnvironmentCredential: AuthenticationError, see the child test).
    const wrong = await refusal(() => sdk(s, 'not-the-secret').credential.getToken(ARM_SCOPE));
    assert.equal(wrong.name, 'AuthenticationRequiredError');
    assert.match(wrong.message, /AADSTS7000215/);
    assert.ok(s.rejected.some((r) => r.status === 401 && r.code === 'invalid_client'));
    const viaSdk = await refusal(() => sdk(s, 'not-the-secret').client.galleries.get(RG, GALLERY));
    assert.match(viaSdk.message, /AADSTS7000215/);

    const gallery = `/subscriptions/${s.subscriptionId}/resourceGroups/${RG}/providers/Microsoft.Compute/galleries/${GALLERY}?api-version=2025-03-03`;
    const none = await raw(s, gallery);
    assert.deepEqual([none.status, none.body.error?.code], [401, 'AuthenticationFailed']);
    const forged = await raw(s, gallery, { Authorization: 'Bearer eyJhbGciOiJub25lIn0.e30.' });
    assert.deepEqual([forged.status, forged.body.error?.code], [401, 'InvalidAuthenticationToken']);

    const { credential, client } = sdk(s);
    const token = (await credential.getToken(ARM_SCOPE)).token;
    const ok = await raw(s, gallery, { Authorization: `Bearer ${token}` });
    assert.equal(ok.status, 200);
    const noVersion = await raw(s, gallery.replace(/\?.*/, ''), { Authorization: `Bearer ${token}` });
    assert.deepEqual([noVersion.status, noVersion.body.error?.code], [400, 'MissingApiVersionParameter']);
    const otherSub = await refusal(() => new ComputeManagementClient(credential, '00000000-0000-0000-0000-000000000000', { endpoint: s.endpoint, agent: new Agent({ ca: readFileSync(s.caFile) }) }).galleries.get(RG, GALLERY));
    assert.deepEqual([otherSub.statusCode, otherSub.code], [404, 'SubscriptionNotFound']);
    const missing = await refusal(() => client.galleries.get(RG, 'noSuchGallery'));
    assert.deepEqual([missing.statusCode, missing.code], [404, 'ResourceNotFound']);
    const orphan = await refusal(() => client.galleryImages.get(RG, 'noSuchGallery', 'x'));
    assert.deepEqual([orphan.statusCode, orphan.code], [404, 'ParentResourceNotFound']);
  });
});
