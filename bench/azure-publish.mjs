#!/usr/bin/env node
// Issue 16 figures: `kiln publish --to azure` of the example release (all 7 formats; the fixed VHD is
// what goes up) to Azurite (Microsoft's storage emulator, real page blobs) and the Azure gallery
// stand-in (test/support/azure-standin.ts: NOT Azure). Measures the page blob upload throughput of
// non-zero data and the share of the VHD skipped as zeros, for 4, 8 and 16 Put Page requests in flight,
// each into a fresh container and gallery. No anchor applies: Packer's azure-arm builder boots a VM in
// Azure. Appends a section to bench/results.md.
// Usage (root, host tools installed, after `npm run build`): node bench/azure-publish.mjs
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadavg, publishBenchWork, releasedExample } from './anchors.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { startAzureStandIn } = await import(join(root, 'dist/test/support/azure-standin.js'));
const { startAzurite } = await import(join(root, 'dist/test/support/azurite.js'));
const { BlobServiceClient } = await import('@azure/storage-blob');
const work = publishBenchWork('azure-publish');

const { repo, record } = releasedExample(root, work);
const vhd = record.artifacts.find((a) => a.format === 'vhd');

const azurite = await startAzurite(join(work, 'azurite'));
const containerOf = (uri) => decodeURIComponent(new URL(uri).pathname.split('/').slice(-2)[0]);
const arm = await startAzureStandIn({
  dir: join(work, 'arm'), resourceGroup: 'rg', pollsBeforeDone: 0,
  sourceExists: async (uri) => {
    const c = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(containerOf(uri));
    const p = await c.getPageBlobClient(decodeURIComponent(new URL(uri).pathname.split('/').pop())).getProperties().catch(() => undefined);
    return p?.contentLength === undefined ? undefined : { size: p.contentLength };
  },
});
const env = {
  ...process.env, AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString, AZURE_TENANT_ID: arm.tenantId, AZURE_CLIENT_ID: arm.clientId,
  AZURE_CLIENT_SECRET: arm.clientSecret, AZURE_AUTHORITY_HOST: arm.endpoint, NODE_EXTRA_CA_CERTS: arm.caFile,
};
const rows = [];
for (const parallel of [4, 8, 16]) {
  const gallery = `bench${parallel}`;
  arm.createGallery(gallery, 'westeurope');
  const dir = join(work, `publisher-${parallel}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'site.yml'), '- hosts: all\n  tasks: []\n');
  writeFileSync(join(dir, 'kiln.yaml'), ['name: web', 'source:', '  debian: {}', 'provision:', '  playbook: site.yml', 'release:', `  store: ${JSON.stringify(join(repo, '.kiln', 'store'))}`,
    'publish:', '  azure:', `    subscription: ${arm.subscriptionId}`, '    resource_group: rg', '    location: westeurope', '    storage_account: devstoreaccount1',
    `    container: bench-${parallel}`, `    gallery: ${gallery}`, '    publisher: bench', '    sku: trixie', '    regions: [westeurope]', `    arm_endpoint: ${arm.endpoint}`, ''].join('\n'));
  const load = loadavg();
  const t0 = Date.now();
  // A child process: Azurite and the stand-in answer from here and from Azurite's own process.
  const p = await new Promise((res, rej) => {
    const c = spawn(process.execPath, [join(root, 'bin/kiln.js'), 'publish', 'web@release-0.1.0', '--to', 'azure', '--parallel', String(parallel), '--json', '--verbose'], { cwd: dir, env });
    let so = ''; let se = '';
    c.stdout.on('data', (d) => { so += d; }); c.stderr.on('data', (d) => { se += d; });
    c.on('close', (code) => (code === 0 ? res({ out: JSON.parse(so), err: se }) : rej(new Error(se.slice(-3000)))));
  });
  const wall = (Date.now() - t0) / 1000;
  const seconds = Number(/ranges sent.* in ([0-9.]+)s/.exec(p.err)?.[1] ?? NaN);
  rows.push({ parallel, wall, seconds, sent: p.out.sent, skipped: p.out.skipped, load });
  console.error(`parallel ${parallel}: ${wall.toFixed(1)} s wall, upload ${seconds} s, ${(p.out.sent / 1e6 / seconds).toFixed(0)} MB/s`);
}
await arm.close();
await azurite.stop();
const r0 = rows[0];
const lines = [
  '', `## Azure publish: the example's fixed VHD as a page blob to Azurite, then a gallery version (${new Date().toISOString().slice(0, 10)}, \`node bench/azure-publish.mjs\`)`, '',
  `The example release's ${(vhd.size / 2 ** 30).toFixed(1)} GiB fixed VHD published by \`kiln publish --to azure\` into a fresh container and gallery: the page blob on Azurite (Microsoft's storage emulator, 127.0.0.1, writing to this disk), the gallery version on the stand-in (test/support/azure-standin.ts, not Azure). "upload" is the page blob part as kiln reports it (read, hash, Put Page with MD5, metadata); "wall" adds the Azure fitness check (fuse2fs), the lease, the gallery calls and the signed metadata. Kiln, Azurite and the stand-in share the machine's two cores. No anchor: Packer's azure-arm builder needs a VM in Azure.`, '',
  '| Put Page requests in flight | wall | upload | non-zero data sent | throughput (non-zero MB/s) | load before |', '| ---: | ---: | ---: | ---: | ---: | --- |',
  ...rows.map((r) => `| ${r.parallel} | ${r.wall.toFixed(1)} s | ${r.seconds.toFixed(1)} s | ${(r.sent / 2 ** 20).toFixed(0)} MiB | **${(r.sent / 1e6 / r.seconds).toFixed(0)}** | ${r.load} |`), '',
  `Skipped as zeros: **${(100 * r0.skipped / (r0.sent + r0.skipped)).toFixed(1)} %** of the VHD (${(r0.skipped / 2 ** 30).toFixed(2)} GiB of ${((r0.sent + r0.skipped) / 2 ** 30).toFixed(2)} GiB, in 64 KiB grains).`, '',
];
appendFileSync(join(root, 'bench/results.md'), lines.join('\n'));
console.error(lines.join('\n'));
