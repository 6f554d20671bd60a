#!/usr/bin/env node
// The release step's cost of putting one raw disk into the local store: before (a hard link, then
// one hashing read of the whole file: what Kiln did when the blob shared the build output's inode)
// against now (a clone, else a hole-keeping copy hashed in the same pass, fsynced). Appends the
// figures to bench/results.md.
//   npm run build && node bench/store-ingest.mjs [--dir /var/tmp/kiln-bench-ingest] [--size-gib 2] [--data-mib 512] [--runs 3] [--raw FILE]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, createReadStream, existsSync, ftruncateSync, linkSync, mkdirSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '/var/tmp/kiln-bench-ingest' }, 'size-gib': { type: 'string', default: '2' },
    'data-mib': { type: 'string', default: '512' }, runs: { type: 'string', default: '3' }, raw: { type: 'string' },
  },
});
const dist = join(here, '..', 'dist', 'src');
const { LayoutStore } = await import(join(dist, 'store', 'layout.js'));
const { hashFile } = await import(join(dist, 'store', 'blobio.js'));
const dir = resolve(values.dir);
const runs = Math.max(1, Number(values.runs));
mkdirSync(dir, { recursive: true });

/** A sparse raw disk: 1 MiB of random data every (size / data) MiB, holes between (like an ext4 image). */
function makeRaw(file, sizeGiB, dataMiB) {
  const size = Math.round(sizeGiB * 2 ** 30);
  const step = Math.floor(size / dataMiB / 2 ** 20) * 2 ** 20;
  const fd = openSync(file, 'w');
  const chunk = randomBytes(2 ** 20);
  for (let i = 0; i < dataMiB; i++) { chunk.writeUInt32LE(i, 0); writeSync(fd, chunk, 0, chunk.length, i * step); }
  ftruncateSync(fd, size);
  closeSync(fd);
}

const raw = values.raw ? resolve(values.raw) : join(dir, 'disk.raw');
if (!values.raw) makeRaw(raw, Number(values['size-gib']), Number(values['data-mib']));
const st = statSync(raw);
for await (const _ of createReadStream(raw, { highWaterMark: 8 << 20 })) { /* page cache, like the build that just wrote it */ }
const { digest, size } = await hashFile(raw);

const storeDir = join(dir, 'store');
async function best(label, fn) {
  let t = Infinity;
  for (let i = 0; i < runs; i++) {
    rmSync(storeDir, { recursive: true, force: true });
    const store = await LayoutStore.open(storeDir, { create: true });
    execFileSync('sync');
    const t0 = process.hrtime.bigint();
    await fn(store);
    t = Math.min(t, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  console.error(`${label}: ${t.toFixed(2)} s`);
  return t;
}

// Before: the old ingest, reproduced with the same hashing helper it used.
const before = await best('hard link + hash', async (store) => {
  const tmp = join(store.tempDir(), `${process.pid}-bench`);
  linkSync(raw, tmp);
  const got = await hashFile(tmp);
  if (got.digest !== digest) throw new Error('digest mismatch');
  execFileSync('mv', [tmp, store.blobPath(digest)]);
});
const after = await best('copy + hash (putBlob)', (store) => store.putBlob('bench', { file: raw, digest, size }));
const blob = statSync(join(storeDir, 'blobs', 'sha256', digest.slice(7)));
rmSync(storeDir, { recursive: true, force: true });
if (!values.raw) rmSync(raw, { force: true });

const fsType = execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '-T', dir]).toString().trim();
const lines = [
  '',
  `## store ingest: hard link vs copy of one raw disk (${new Date().toISOString().slice(0, 10)}, \`node bench/store-ingest.mjs\`)`,
  '',
  `Raw ${values.raw ? raw : 'synthetic'}: ${(st.size / 2 ** 30).toFixed(2)} GiB virtual, ${(st.blocks * 512 / 2 ** 20).toFixed(0)} MiB allocated; ` +
    `store on ${fsType} (${dir}); ${cpus().length} CPUs, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}; best of ${runs} run(s), raw in page cache.`,
  '',
  '| ingest | time (s) | blob allocated |',
  '| --- | ---: | ---: |',
  `| before: hard link + hash (blob = the build's output file) | ${before.toFixed(2)} | shared |`,
  `| now: ${fsType === 'btrfs' || fsType === 'xfs' ? 'clone' : 'sparse copy'} + hash in one pass + fsync | ${after.toFixed(2)} | ${(blob.blocks * 512 / 2 ** 20).toFixed(0)} MiB |`,
  '',
  `Ratio now/before = **${(after / before).toFixed(2)}** (${after >= before ? '+' : '−'}${Math.abs(after - before).toFixed(2)} s per raw disk in the release step).`,
  '',
];
const results = join(here, 'results.md');
if (!existsSync(results)) writeFileSync(results, '# Benchmark results\n');
appendFileSync(results, lines.join('\n'));
console.log(lines.join('\n'));
