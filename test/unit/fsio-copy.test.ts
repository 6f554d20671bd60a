import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { copyFileSparse } from '../../src/fsio.js';
import { requireOnHost } from './host-requirements.js';

/** A sparse file: data at a few odd offsets, holes between, and a hole at the end. */
function sparseFile(path: string, size: number, pieces: { at: number; len: number }[]): Buffer {
  const fd = openSync(path, 'w');
  const whole = Buffer.alloc(size);
  for (const p of pieces) {
    const data = randomBytes(p.len);
    writeSync(fd, data, 0, p.len, p.at);
    data.copy(whole, p.at);
  }
  ftruncateSync(fd, size);
  closeSync(fd);
  return whole;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('copyFileSparse copies byte for byte with the sha256 of the content, keeps holes, and shares no inode', async () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-copy-'));
  try {
    const src = join(d, 'disk.raw');
    const size = 64 * 1024 * 1024 + 1234;
    const whole = sparseFile(src, size, [{ at: 0, len: 5000 }, { at: 9 * 1024 * 1024 + 17, len: 70_000 }, { at: 40 * 1024 * 1024 - 3, len: 4096 * 3 + 1 }]);
    const dst = join(d, 'copy.raw');
    const r = await copyFileSparse(src, dst, { hash: true, reflink: false });
    assert.equal(r.how, 'copy');
    assert.equal(r.size, size);
    assert.equal(r.sha256, sha(whole));
    assert.deepEqual(readFileSync(dst), whole);
    assert.notEqual(statSync(dst).ino, statSync(src).ino);
    assert.ok(statSync(dst).blocks * 512 < 1024 * 1024, `only the data is allocated (${statSync(dst).blocks * 512} bytes)`);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('copyFileSparse of a file with no zero block and of an empty file', async () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-copy-'));
  try {
    for (const data of [randomBytes(3 * 4096 + 5), Buffer.alloc(0), randomBytes(9 << 20)]) {
      const src = join(d, 'src');
      const dst = join(d, 'dst');
      rmSync(dst, { force: true });
      writeFileSync(src, data);
      const r = await copyFileSparse(src, dst, { hash: true });
      assert.equal(r.sha256, sha(data));
      assert.deepEqual(readFileSync(dst), data);
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('copyFileSparse refuses an existing destination and leaves it alone', async () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-copy-'));
  try {
    writeFileSync(join(d, 'src'), 'new');
    writeFileSync(join(d, 'dst'), 'theirs');
    await assert.rejects(copyFileSparse(join(d, 'src'), join(d, 'dst')), /EEXIST/);
    assert.equal(readFileSync(join(d, 'dst'), 'utf8'), 'theirs');
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('an aborted copy stops and removes its partial destination', async () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-copy-'));
  try {
    writeFileSync(join(d, 'src'), randomBytes(12 << 20));
    const ac = new AbortController();
    await assert.rejects(copyFileSparse(join(d, 'src'), join(d, 'dst'), { onProgress: () => ac.abort(new Error('interrupted')), signal: ac.signal }), /interrupted/);
    assert.equal(existsSync(join(d, 'dst')), false);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('copyFileSparse works from one filesystem to another (tmpfs to the disk)', async () => {
  requireOnHost('/dev/shm', 'the tmpfs these tests use as a second filesystem', 'mount a tmpfs there (systemd and Docker hosts have one)');
  const a = mkdtempSync('/dev/shm/kiln-copy-');
  const b = mkdtempSync(join('/var/tmp', 'kiln-copy-'));
  try {
    const whole = sparseFile(join(a, 'src'), 8 << 20, [{ at: 1 << 20, len: 100 }]);
    const r = await copyFileSparse(join(a, 'src'), join(b, 'dst'), { hash: true });
    assert.equal(r.sha256, sha(whole));
    assert.deepEqual(readFileSync(join(b, 'dst')), whole);
    assert.ok(statSync(join(b, 'dst')).blocks * 512 <= 64 * 1024);
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});
