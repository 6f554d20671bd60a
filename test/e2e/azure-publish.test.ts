/**
 * Issue 16 (Azure) on the real example release: `kiln publish --to azure`. Storage is real: Azurite,
 * Microsoft's emulator, on 127.0.0.1. The Compute Gallery API and Entra ID have no emulator: they are a
 * stand-in (test/support/azure-standin.ts: NOT Azure; HTTPS with a self-signed certificate, bearer
 * tokens it issued, long-running operations polled as ARM does, the gallery's rules enforced), driven
 * through the official SDKs.
 *
 * The bytes are proven end to end: the page blob, downloaded, is the release's VHD byte for byte, and
 * without its footer it is the raw disk, whose exact bytes boot under UEFI in aws-publish.test.ts and
 * example-image.test.ts (one build of the example per run). Not booted again here, for the suite's time.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { BlobServiceClient } from '@azure/storage-blob';
import { startAzureStandIn, type AzureStandIn } from '../support/azure-standin.js';
import { startAzurite, type Azurite } from '../support/azurite.js';
import { builtExample, E2E_DIR, filesHolding, freshWorkDir, kiln, RUN_ID, type BuiltExample } from './fixture.js';

const REF = 'web@release-0.1.0';
const MIB = 1024 * 1024;

describe('kiln publish --to azure (Azurite, and the Azure gallery stand-in)', () => {
  let built: BuiltExample;
  let azurite: Azurite;
  let arm: AzureStandIn;
  let work: string;
  let publisher: string;
  let env: NodeJS.ProcessEnv;
  const outputs: string[] = [];
  const container = () => BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('kiln-images');
  const run = async (args: string[]) => {
    const r = await kiln(args, { cwd: publisher, env });
    outputs.push(r.stdout, r.stderr);
    return r;
  };

  before(async () => {
    built = await builtExample();
    work = freshWorkDir('azure-publish');
    azurite = await startAzurite(join(work, 'azurite'));
    arm = await startAzureStandIn({
      dir: join(work, 'arm'), resourceGroup: 'images-rg', pollsBeforeDone: 1,
      sourceExists: async (uri) => {
        const name = decodeURIComponent(new URL(uri).pathname.split('/').pop() ?? '');
        const p = await container().getPageBlobClient(name).getProperties().catch(() => undefined);
        return p?.contentLength === undefined ? undefined : { size: p.contentLength };
      },
    });
    arm.createGallery('kiln', 'westeurope');
    // A directory whose kiln.yaml only says where to publish (the example's own repository is shared by the suite).
    publisher = join(work, 'publisher');
    mkdirSync(publisher);
    writeFileSync(join(publisher, 'site.yml'), '- hosts: all\n  tasks: []\n');
    writeFileSync(join(publisher, 'kiln.yaml'), [
      'name: web', 'source:', '  debian: {}', 'provision:', '  playbook: site.yml',
      'release:', `  store: ${JSON.stringify(join(built.dir, '.kiln', 'store'))}`,
      'publish:', '  azure:', `    subscription: ${arm.subscriptionId}`, '    resource_group: images-rg', '    location: westeurope',
      '    storage_account: devstoreaccount1', '    gallery: kiln', '    publisher: example', '    sku: trixie', '    regions: [westeurope, northeurope]',
      `    arm_endpoint: ${arm.endpoint}`, '',
    ].join('\n'));
    env = {
      AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      AZURE_TENANT_ID: arm.tenantId, AZURE_CLIENT_ID: arm.clientId, AZURE_CLIENT_SECRET: arm.clientSecret, AZURE_AUTHORITY_HOST: arm.endpoint,
      NODE_EXTRA_CA_CERTS: arm.caFile,
    };
  });
  after(async () => { await arm?.close(); await azurite?.stop(); });

  let published: { location: string; versionId: string; version: string; existing: boolean; blobUrl: string; sent: number; skipped: number };

  test('publishes the release: the VHD as a page blob, a V2 image definition, version 0.1.0 replicated to two regions, tagged', async () => {
    const r = await run(['publish', REF, '--to', 'azure', '--json']);
    assert.equal(r.code, 0, r.stderr);
    published = JSON.parse(r.stdout);
    assert.equal(published.version, '0.1.0');
    assert.equal(published.existing, false);
    assert.match(published.versionId, /\/providers\/Microsoft\.Compute\/galleries\/kiln\/images\/web\/versions\/0\.1\.0$/);
    const [image] = arm.images('kiln');
    assert.equal(image.name, 'web');
    assert.equal(image.hyperVGeneration, 'V2', 'the disk boots UEFI');
    assert.deepEqual(image.identifier, { publisher: 'example', offer: 'web', sku: 'trixie' });
    const [version] = arm.versions('kiln', 'web');
    assert.equal(version.provisioningState, 'Succeeded');
    assert.deepEqual(version.targetRegions.sort(), ['northeurope', 'westeurope']);
    assert.equal(version.tags.ImageVersion, 'release-0.1.0');
    assert.equal(version.tags['kiln:release-digest'], built.record.release?.digest);
    assert.equal(version.tags['kiln:commit'], built.record.commit);
    assert.ok(version.sourceUri.endsWith('/kiln-images/web-release-0.1.0.vhd'), version.sourceUri);
    // Only the lookups of what did not exist yet (the version, the image definition) were answered 404.
    assert.deepEqual(arm.rejected.filter((x) => !(x.method === 'GET' && x.status === 404)), []);
  });

  test('the page blob: only non-zero ranges, 512-aligned, none over 4 MiB; downloaded, it is the VHD, and without its footer the raw disk', async () => {
    const blob = container().getPageBlobClient('web-release-0.1.0.vhd');
    let written = 0;
    for await (const r of blob.listPageRanges()) {
      const start = r.start ?? -1;
      const end = r.end ?? -1;
      assert.ok(start % 512 === 0 && (end + 1) % 512 === 0, `range ${start}-${end} is aligned`);
      written += end + 1 - start;
    }
    const vhd = built.record.artifacts.find((a) => a.format === 'vhd');
    const raw = built.record.artifacts.find((a) => a.format === 'raw');
    assert.ok(vhd && raw);
    assert.equal(written, published.sent, 'Get Page Ranges shows exactly what was sent');
    assert.ok(written < vhd.size / 4, `mostly holes: ${written} of ${vhd.size} bytes written`);
    assert.ok(published.sent > 0 && published.skipped > vhd.size / 2);
    const file = join(work, 'downloaded.vhd');
    await blob.downloadToFile(file);
    assert.equal(statSync(file).size, vhd.size);
    assert.equal((vhd.size - 512) % MIB, 0);
    // One pass: the whole VHD's digest, the raw disk's (all but the footer), and the footer itself.
    const whole = createHash('sha256');
    const disk = createHash('sha256');
    let pos = 0;
    let footer = Buffer.alloc(0);
    for await (const c of createReadStream(file, { highWaterMark: 4 << 20 })) {
      const b = c as Buffer;
      whole.update(b);
      const inRaw = Math.max(0, Math.min(b.length, raw.size - pos));
      disk.update(b.subarray(0, inRaw));
      if (inRaw < b.length) footer = Buffer.concat([footer, b.subarray(inRaw)]);
      pos += b.length;
    }
    assert.equal(whole.digest('hex'), vhd.sha256);
    assert.equal(disk.digest('hex'), raw.sha256);
    assert.equal(footer.length, vhd.size - raw.size);
    assert.equal(footer.subarray(footer.length - 512, footer.length - 504).toString('latin1'), 'conectix');
    rmSync(file, { force: true });
    // Puts of more than 4 MiB would have been refused by Azurite; the SDK client sent none.
    const props = await blob.getProperties();
    assert.equal(props.metadata?.imageversion, 'release-0.1.0');
    assert.equal(props.leaseState, 'available');
  });

  test("Debian's Azure CLI, an independent client, sees the blob and Kiln's metadata", async () => {
    const out = await promisify(execFile)('/usr/bin/az', ['storage', 'blob', 'show', '--connection-string', azurite.connectionString, '-c', 'kiln-images', '-n', 'web-release-0.1.0.vhd', '-o', 'json'], {
      encoding: 'utf8', timeout: 120_000, env: { PATH: '/usr/bin:/bin', HOME: work, AZURE_CONFIG_DIR: join(work, 'az'), AZURE_CORE_COLLECT_TELEMETRY: 'false' },
    });
    const az = JSON.parse(out.stdout) as { properties: { blobType: string }; metadata: Record<string, string> };
    assert.equal(az.properties.blobType, 'PageBlob');
    assert.equal(az.metadata.kiln_release_digest, built.record.release?.digest);
  });

  test('kiln resolve --cloud azure and kiln releases show the gallery version', async () => {
    const r = await run(['resolve', REF, '--cloud', 'azure']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), published.versionId);
    const ls = await run(['releases', 'web']);
    assert.match(ls.stdout, /release-0\.1\.0 .*azure:westeurope/);
  });

  test('publishing again sends nothing and creates nothing', async () => {
    const puts = arm.requests.filter((q) => q.method === 'PUT').length;
    const r = await run(['publish', REF, '--to', 'azure', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const again = JSON.parse(r.stdout) as typeof published;
    assert.equal(again.existing, true);
    assert.equal(again.versionId, published.versionId);
    assert.equal(again.sent, 0);
    assert.equal(arm.requests.filter((q) => q.method === 'PUT').length, puts);
    assert.equal(arm.versions('kiln', 'web').length, 1);
  });

  test('an upload killed midway resumes on the next run from the pages already written, and completes', async () => {
    // Another container and gallery, so the example's release is not already there.
    arm.createGallery('kiln2', 'westeurope');
    const other = join(work, 'publisher2');
    mkdirSync(other, { recursive: true });
    writeFileSync(join(other, 'site.yml'), '- hosts: all\n  tasks: []\n');
    writeFileSync(join(other, 'kiln.yaml'), readFileSync(join(publisher, 'kiln.yaml'), 'utf8').replace('    gallery: kiln\n', '    gallery: kiln2\n    container: kiln-images-2\n'));
    const killed = await kiln(['publish', REF, '--to', 'azure', '--parallel', '1'], {
      cwd: other, env,
      onStderr: (chunk, child) => { if (/azure: [0-9.]+ [KM]iB sent/.test(chunk)) child.kill('SIGKILL'); },
    });
    outputs.push(killed.stdout, killed.stderr);
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    const blob = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('kiln-images-2').getPageBlobClient('web-release-0.1.0.vhd');
    const before = await blob.getProperties();
    assert.notEqual(before.metadata?.kiln_complete, 'true', 'the killed run did not mark the blob complete');
    assert.equal(arm.versions('kiln2', 'web').length, 0, 'and made no gallery version');
    const r = await kiln(['publish', REF, '--to', 'azure', '--json'], { cwd: other, env });
    outputs.push(r.stdout, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /resuming the page blob kiln-images-2\/web-release-0\.1\.0\.vhd of an interrupted upload \([0-9.]+ [KMG]iB written already\)/);
    const p2 = JSON.parse(r.stdout) as typeof published;
    assert.ok(p2.sent < published.sent, `the resumed run sent less (${p2.sent} of ${published.sent} bytes)`);
    assert.equal(arm.versions('kiln2', 'web').length, 1);
    const h = createHash('sha256');
    for await (const c of await blob.download().then((d) => d.readableStreamBody ?? [])) h.update(c as Buffer);
    assert.equal(h.digest('hex'), built.record.artifacts.find((a) => a.format === 'vhd')?.sha256);
  });

  test('the Azure client secret and storage key appear in no output, log or store file', () => {
    const secrets = [arm.clientSecret, /AccountKey=([^;]+)/.exec(azurite.connectionString)?.[1] ?? 'missing'];
    const seen = filesHolding([join(built.dir, '.kiln', 'store'), join(E2E_DIR, RUN_ID, 'logs')], secrets);
    for (const o of outputs) for (const s of secrets) if (o.includes(s)) seen.push('kiln output');
    assert.deepEqual(seen, []);
  });

  test('kiln publish reports an Azure error with the call and what to do: a wrong client secret', async () => {
    const r = await kiln(['publish', 'web@release-0.1.0', '--to', 'azure'], { cwd: publisher, env: { ...env, AZURE_CLIENT_SECRET: 'wrong-secret' } });
    outputs.push(r.stdout, r.stderr);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /reading gallery image version kiln\/web\/0\.1\.0 failed: no Azure token/);
    assert.match(r.stderr, /hint: the Azure credentials were refused or are missing/);
    assert.doesNotMatch(r.stderr, /internal error/);
  });
});
