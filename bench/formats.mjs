#!/usr/bin/env node
// Times writing every format together against writing each format alone, on one raw disk, and
// appends the figures to bench/results.md.
//   npm run build && node bench/formats.mjs path/to/disk.raw [--qcow2-compress] [--out DIR] [--runs N]
import { execFileSync } from 'node:child_process';
import { appendFileSync, createReadStream, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { 'qcow2-compress': { type: 'boolean', default: false }, out: { type: 'string' }, runs: { type: 'string', default: '1' } },
});
const raw = positionals[0];
if (!raw || !existsSync(raw)) {
  console.error('usage: node bench/formats.mjs <raw disk> [--qcow2-compress] [--out DIR] [--runs N]');
  process.exit(2);
}
const { writeFormats } = await import(join(here, '..', 'dist', 'src', 'formats', 'index.js'));
const { FORMATS } = await import(join(here, '..', 'dist', 'src', 'template', 'schema.js'));
const out = resolve(values.out ?? join(tmpdir(), 'kiln-bench-formats'));
const runs = Math.max(1, Number(values.runs));
const input = (dir) => ({
  raw: resolve(raw), outDir: dir, name: 'bench', version: '0.0.0', sourceDateEpoch: 1700000000,
  firmware: ['bios', 'uefi'], cpus: 2, memoryMiB: 1024, qcow2Compress: values['qcow2-compress'],
});

async function warm() {
  for await (const _ of createReadStream(raw, { highWaterMark: 8 << 20 })) { /* page cache, like the build that just wrote it */ }
}
async function time(formats) {
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const dir = join(out, formats.length === 1 ? formats[0] : 'all');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const t0 = process.hrtime.bigint();
    await writeFormats(formats, input(dir));
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    rmSync(dir, { recursive: true, force: true });
  }
  return best;
}

await warm();
const alone = {};
for (const f of FORMATS) {
  alone[f] = await time([f]);
  console.error(`${f.padEnd(6)} alone ${alone[f].toFixed(2)} s`);
}
const together = await time([...FORMATS]);
const sum = Object.values(alone).reduce((a, b) => a + b, 0);
const slowest = Math.max(...Object.values(alone));
console.error(`all together ${together.toFixed(2)} s; sum of singles ${sum.toFixed(2)} s; slowest single ${slowest.toFixed(2)} s`);

const st = statSync(raw);
const qemu = execFileSync('qemu-img', ['--version']).toString().split('\n')[0];
const lines = [
  '',
  `## formats: all together vs each alone (${new Date().toISOString().slice(0, 10)})`,
  '',
  `Raw ${raw}: ${(st.size / 2 ** 30).toFixed(2)} GiB virtual, ${(st.blocks * 512 / 2 ** 20).toFixed(0)} MiB allocated. ` +
    `${cpus().length} CPUs, ${qemu}, qcow2 ${values['qcow2-compress'] ? 'compressed' : 'uncompressed'}, best of ${runs} run(s), raw in page cache.`,
  '',
  '| format | alone (s) |',
  '| --- | ---: |',
  ...FORMATS.map((f) => `| ${f} | ${alone[f].toFixed(2)} |`),
  `| **sum of singles** | ${sum.toFixed(2)} |`,
  `| **all together** | ${together.toFixed(2)} |`,
  '',
  `Ratio all/sum = **${(together / sum).toFixed(2)}**; all/slowest single = **${(together / slowest).toFixed(2)}**.`,
  '',
];
const results = join(here, 'results.md');
if (!existsSync(results)) writeFileSync(results, '# Benchmark results\n');
appendFileSync(results, lines.join('\n'));
console.log(lines.join('\n'));
