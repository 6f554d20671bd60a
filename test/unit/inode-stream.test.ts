import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { auditImage } from '../../src/audit/image.js';
import { auditTree } from '../../src/audit/tree.js';
import { CHUNK } from '../../src/audit/secrets.js';
import { InodeStreamError, readInodes, type InodeFile } from '../../src/image/inode-stream.js';
import { withMountedFilesystem } from '../../src/image/mount.js';
import type { Logger } from '../../src/log.js';

const work = mkdtempSync(join(tmpdir(), 'kiln-inode-stream-test-'));
const tree = join(work, 'tree');
const fs = join(work, 'fs.ext4');
const rand = (n: number) => Array.from({ length: n }, () => 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'[randomInt(62)]).join('');
const token = `ghp_${rand(36)}`;

// Contents chosen to trip a careless stream parser: debugfs's own echo inside a file, a name with a
// newline, a file larger than the scanner's chunk with a secret across the boundary, binary bytes.
const files: Record<string, Buffer> = {
  '/etc/echo.txt': Buffer.from('debugfs: cat <12>\nnot a header\n'),
  '/etc/one': Buffer.from('x'),
  '/var/lib/app/new\nline': Buffer.from(`token=${token}\n`),
  '/var/lib/app/blob.bin': Buffer.concat([randomBytes(70_000), Buffer.from(`\0${token}\0`), randomBytes(5000)]),
  '/var/lib/app/across.dat': (() => { const b = Buffer.alloc(CHUNK + 4096, 'y '); b.write(` ${token} `, CHUNK - 20, 'latin1'); return b; })(),
};

before(() => {
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(dirname(join(tree, p)), { recursive: true });
    writeFileSync(join(tree, p), data);
  }
  writeFileSync(join(tree, 'etc/empty'), '');
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', tree, fs, '64M']);
});
after(() => rmSync(work, { recursive: true, force: true }));

/** The inode and size of each path, read through the FUSE view as the audit's walk does. */
function inodes(paths: string[]): Promise<InodeFile[]> {
  return withMountedFilesystem(fs, 0, join(work, 'scratch'), async (t) => paths.map((p) => {
    const st = lstatSync(join(t.root, p));
    return { ino: st.ino, size: st.size };
  }));
}

async function collect(list: InodeFile[]): Promise<Buffer[]> {
  const got: Buffer[][] = list.map(() => []);
  let ended = 0;
  await readInodes(fs, 0, list, (i) => ({ data: (c) => got[i].push(Buffer.from(c)), end: () => { ended++; } }));
  assert.equal(ended, list.length, 'every file ends');
  return got.map((g) => Buffer.concat(g));
}

test('debugfs streams each file byte for byte, whatever the file holds', async () => {
  const paths = [...Object.keys(files), '/etc/empty', '/etc/one'];
  const list = await inodes(paths);
  const got = await collect(list);
  paths.forEach((p, i) => assert.ok(got[i].equals(files[p] ?? Buffer.alloc(0)), `${JSON.stringify(p)}: ${got[i].length} bytes`));
});

test('a size that does not match the inode, or an inode that is not there, rejects the whole read', async () => {
  const [echo, one] = await inodes(['/etc/echo.txt', '/etc/one']);
  await assert.rejects(collect([{ ...echo, size: echo.size + 1 }, one]), InodeStreamError, 'one byte more');
  await assert.rejects(collect([{ ...echo, size: echo.size - 1 }, one]), InodeStreamError, 'one byte less');
  await assert.rejects(collect([one, { ino: 99_999, size: 1 }]), InodeStreamError, 'no such inode');
});

test('an image audit reads through debugfs, finds what the same tree holds, and says nothing of a fallback', async () => {
  const warnings: string[] = [];
  const logger: Logger = { verbose: false, info() {}, debug() {}, warn: (m) => { warnings.push(m); } };
  // A bare filesystem is not a root (no /etc would be a finding of its own): compare secret findings only.
  const secrets = (fs: { check: string; path: string; fingerprint?: string }[]) => fs.filter((f) => f.fingerprint).map((f) => `${f.check} ${f.path} ${f.fingerprint}`).sort();
  const fromImage = secrets(await auditImage(fs, { logger }));
  const fromTree = secrets(await auditTree(tree));
  assert.deepEqual(warnings, []);
  assert.deepEqual(fromImage, fromTree);
  for (const p of ['/var/lib/app/new\nline', '/var/lib/app/blob.bin', '/var/lib/app/across.dat']) assert.ok(fromImage.some((f) => f.includes(` ${p} `)), `${JSON.stringify(p)} in ${JSON.stringify(fromImage)}`);
});

test('when the bulk read cannot be vouched for, every file is read through the mounted view', async () => {
  const warnings: string[] = [];
  const logger: Logger = { verbose: false, info() {}, debug() {}, warn: (m) => { warnings.push(m); } };
  const broken = async (list: readonly InodeFile[], sink: (i: number) => { data(c: Buffer): void; end(): void }) => {
    // Feeds a wrong body to the first file, then fails as readInodes does on a bad stream.
    const s = sink(0);
    s.data(Buffer.from('nothing here'));
    s.end();
    throw new InodeStreamError(`stream of ${list.length} files broke`);
  };
  const found = await auditTree(tree, { readFiles: broken, logger });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /reading every file through the mounted view/);
  assert.equal(found.filter((f) => f.fingerprint).length, 3, JSON.stringify(found));
});

test('an interrupted audit stops when debugfs is killed, instead of reading every file through the mounted view', async () => {
  const warnings: string[] = [];
  const logger: Logger = { verbose: false, info() {}, debug() {}, warn: (m) => { warnings.push(m); } };
  const stop = new AbortController();
  const killed = async () => {
    // What an interrupt does: the build's signal is aborted and debugfs is killed, so its stream breaks.
    stop.abort(new Error('interrupted by SIGINT'));
    throw new InodeStreamError('debugfs exited with signal SIGTERM');
  };
  await assert.rejects(auditTree(tree, { readFiles: killed, logger, signal: stop.signal }), /interrupted by SIGINT/);
  assert.deepEqual(warnings, [], 'no fallback to reading every file');
});

test('kill -9 of Kiln while debugfs streams leaves no debugfs behind', async () => {
  const [big] = await inodes(['/var/lib/app/across.dat']);
  const debugfsOf = () => execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n').filter((l) => /^\s*\d+ debugfs /.test(l) && l.includes(fs));
  const script = `
    import { readInodes } from ${JSON.stringify(new URL('../../src/image/inode-stream.js', import.meta.url).href)};
    await readInodes(${JSON.stringify(fs)}, 0, [${JSON.stringify(big)}], () => ({
      // Blocks the event loop on the first bytes: debugfs then blocks on a full pipe, mid-file.
      data() { process.stdout.write('streaming\\n'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); },
      end() {},
    }));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('streaming')) resolve(); });
    child.on('exit', () => reject(new Error('the child ended before streaming')));
  });
  assert.equal(debugfsOf().length, 1, 'debugfs is running');
  child.kill('SIGKILL');
  const deadline = Date.now() + 10_000;
  while (debugfsOf().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(debugfsOf(), [], 'debugfs died with Kiln');
});
