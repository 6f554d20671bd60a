#!/usr/bin/env node
// Issue 16 figures (GCE): `kiln publish --to gce` of the example release (all 7 formats; the gce tarball
// is what goes up) to the Google Cloud stand-in (test/support/gce-standin.ts: NOT Google; HTTPS, the JSON
// API's resumable upload, Compute's images.insert, which it does by unpacking the tarball with GNU tar).
// Measures the upload throughput (32 MiB chunks, each a request answered after it is written to disk), and
// how the wall time splits between the fitness check, the upload and the image. Two runs, each to a fresh
// image name. No anchor applies: Packer's googlecompute-import post-processor needs Google Cloud.
// Appends a section to bench/results.md.
// Usage (root, host tools installed, after `npm run build`): node bench/gce-publish.mjs
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadavg, publishBenchWork, releasedExample } from './anchors.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { startGceStandin } = await import(join(root, 'dist/test/support/gce-standin.js'));
const work = publishBenchWork('gce-publish');

const { repo, record } = releasedExample(root, work);
const tar = record.artifacts.find((a) => a.format === 'gce');
const gce = await startGceStandin({ dir: join(work, 'standin'), pollsBeforeDone: 1 });
const env = { ...process.env, GOOGLE_APPLICATION_CREDENTIALS: gce.credentialsFile, ...gce.env };
const rows = [];
for (const run of [1, 2]) {
  const dir = join(work, `publisher-${run}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'site.yml'), '- hosts: all\n  tasks: []\n');
  writeFileSync(join(dir, 'kiln.yaml'), ['name: web', 'source:', '  debian: {}', 'provision:', '  playbook: site.yml', 'release:', `  store: ${JSON.stringify(join(repo, '.kiln', 'store'))}`,
    'publish:', '  gce:', `    project: ${gce.project}`, '    bucket: kiln-images', `    image_prefix: bench${run}`, `    object_prefix: run${run}/`,
    `    compute_endpoint: ${gce.url}`, `    storage_endpoint: ${gce.url}`, ''].join('\n'));
  const load = loadavg();
  const t0 = Date.now();
  const stamps = {};
  // A child process: the stand-in answers from here.
  const p = await new Promise((res, rej) => {
    const c = spawn(process.execPath, [join(root, 'bin/kiln.js'), 'publish', 'web@release-0.1.0', '--to', 'gce', '--json'], { cwd: dir, env });
    let so = ''; let se = '';
    c.stdout.on('data', (d) => { so += d; });
    c.stderr.on('data', (d) => {
      se += d;
      const now = (Date.now() - t0) / 1000;
      if (/gce: uploading /.test(d) && !stamps.upload) stamps.upload = now;
      if (/gce: creating the image/.test(d) && !stamps.image) stamps.image = now;
    });
    c.on('close', (code) => (code === 0 ? res({ out: JSON.parse(so), err: se }) : rej(new Error(se.slice(-3000)))));
  });
  const wall = (Date.now() - t0) / 1000;
  const seconds = Number(/uploaded: .* in ([0-9.]+)s/.exec(p.err)?.[1] ?? NaN);
  rows.push({ run, wall, seconds, fit: stamps.upload, image: wall - stamps.image, sent: p.out.sent, load });
  console.error(`run ${run}: ${wall.toFixed(1)} s wall, upload ${seconds} s, ${(p.out.sent / 1e6 / seconds).toFixed(0)} MB/s`);
}
await gce.close();
const lines = [
  '', `## GCE publish: the example's gce tarball to the Google Cloud stand-in, then an image (${new Date().toISOString().slice(0, 10)}, \`node bench/gce-publish.mjs\`)`, '',
  `The example release's ${(tar.size / 2 ** 20).toFixed(0)} MiB gce tarball (a 2 GiB disk) published by \`kiln publish --to gce\`, each run to a fresh object and image name, against the stand-in (test/support/gce-standin.ts, not Google: HTTPS on 127.0.0.1, each 32 MiB chunk written to this disk before it is answered; the image made by unpacking the tarball with GNU tar). "before upload" is the fitness check of the raw disk (fuse2fs) and the lookups; "upload" is the resumable upload as kiln reports it (read, sha256 and MD5, chunks, the object's MD5 checked); "image" is images.insert to READY plus deleting the object, the stand-in's own unpacking included. Kiln and the stand-in share the machine's two cores. No anchor: Packer's googlecompute-import needs Google Cloud.`, '',
  '| run | wall | before upload | upload | throughput (MB/s) | image | load before |', '| ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...rows.map((r) => `| ${r.run} | ${r.wall.toFixed(1)} s | ${r.fit.toFixed(1)} s | ${r.seconds.toFixed(1)} s | **${(r.sent / 1e6 / r.seconds).toFixed(0)}** | ${r.image.toFixed(1)} s | ${r.load} |`), '',
];
appendFileSync(join(root, 'bench/results.md'), lines.join('\n'));
console.error(lines.join('\n'));
