#!/usr/bin/env node
// Issue 15 figures: `kiln publish --to aws` of the example release (all 7 formats; the raw disk is what
// goes up) against the AWS stand-in (test/support/aws-standin.ts: NOT AWS, a local server that checks
// every request against botocore's models and stores each block as a file). Measures the upload
// throughput of non-zero data and the share of all-zero blocks skipped, for 4, 16 and 64 requests in
// flight, each into a fresh region (nothing there yet). No anchor applies: Packer's amazon-import needs
// S3 and VM Import, which no server here provides. Appends a section to bench/results.md.
// Usage (root, host tools installed, after `npm run build`): node bench/aws-publish.mjs
import { appendFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadavg, publishBenchWork, releasedExample } from './anchors.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { startAwsStandIn } = await import(join(root, 'dist/test/support/aws-standin.js'));
const work = publishBenchWork('aws-publish');

const { repo, record } = releasedExample(root, work);
const raw = record.artifacts.find((a) => a.format === 'raw');

const AKID = 'AKIAKILNBENCH0000001';
const SECRET = 'bench/StandInSecret+000000000000000000000';
const standin = await startAwsStandIn({ dir: join(work, 'standin'), accessKeyId: AKID, secretAccessKey: SECRET });
const env = { ...process.env, AWS_ACCESS_KEY_ID: AKID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_ENDPOINT_URL: standin.endpoint, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_EC2_METADATA_DISABLED: 'true' };
const rows = [];
const regions = { 4: 'eu-west-1', 16: 'eu-west-2', 64: 'eu-west-3' };
for (const parallel of [4, 16, 64]) {
  const load = loadavg();
  const t0 = Date.now();
  // A child process: the stand-in answers from this one, so nothing here may block.
  const r = await runPublish(parallel, regions[parallel]);
  const wall = (Date.now() - t0) / 1000;
  const up = r.upload;
  rows.push({ parallel, wall, seconds: up.seconds, blocks: up.blocks, skipped: up.skipped, mbps: up.bytes / 1e6 / up.seconds, load });
  console.error(`parallel ${parallel}: ${wall.toFixed(1)} s wall, upload ${up.seconds.toFixed(1)} s, ${(up.bytes / 1e6 / up.seconds).toFixed(0)} MB/s, ${up.blocks} blocks sent, ${up.skipped} skipped`);
}
await standin.close();

async function runPublish(parallel, region) {
  const { spawn } = await import('node:child_process');
  return new Promise((res, rej) => {
    const c = spawn(process.execPath, [join(root, 'bin/kiln.js'), 'publish', 'web@release-0.1.0', '--to', 'aws', '--region', region, '--parallel', String(parallel), '--json'], { cwd: repo, env });
    let so = '';
    let se = '';
    c.stdout.on('data', (d) => { so += d; });
    c.stderr.on('data', (d) => { se += d; });
    c.on('close', (code) => (code === 0 ? res(JSON.parse(so)[0]) : rej(new Error(se.slice(-3000)))));
  });
}

const total = rows[0].blocks + rows[0].skipped;
const lines = [
  '', `## AWS publish: EBS direct API upload of the example's raw disk to the AWS stand-in (${new Date().toISOString().slice(0, 10)}, \`node bench/aws-publish.mjs\`)`, '',
  `The example release (${(raw.size / 2 ** 30).toFixed(1)} GiB raw disk, ${total} blocks of 512 KiB) published by \`kiln publish --to aws\` into a fresh region of the stand-in (test/support/aws-standin.ts, not AWS: every request checked against botocore's models and its SigV4 signature, every block stored as a file) on 127.0.0.1, 2 cores. "upload" is the EBS part (read, hash, PutSnapshotBlock, CompleteSnapshot) as kiln reports it; "wall" adds the EC2 fitness check of the disk (fuse2fs), the lookups, RegisterImage and the signed metadata. Kiln and the stand-in share the machine's two cores. No anchor: Packer's amazon-import path needs S3 and VM Import.`, '',
  '| requests in flight | wall | upload | non-zero data sent | throughput (non-zero MB/s) | load before |', '| ---: | ---: | ---: | ---: | ---: | --- |',
  ...rows.map((r) => `| ${r.parallel} | ${r.wall.toFixed(1)} s | ${r.seconds.toFixed(1)} s | ${(r.blocks * 0.5).toFixed(0)} MiB (${r.blocks} blocks) | **${r.mbps.toFixed(0)}** | ${r.load} |`), '',
  `All-zero blocks skipped: **${rows[0].skipped} of ${total} (${((100 * rows[0].skipped) / total).toFixed(1)} %)**: ${(rows[0].skipped * 0.5 / 1024).toFixed(2)} GiB of the ${(raw.size / 2 ** 30).toFixed(1)} GiB disk never leave the machine.`, '',
];
appendFileSync(join(root, 'bench/results.md'), lines.join('\n'));
console.error(lines.join('\n'));
