/**
 * The out directory holds the user's files beside Kiln's: Kiln replaces and removes only what its
 * manifest says it wrote, refuses a name collision before changing anything, and works when the
 * staging directory is on another filesystem.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Artifact } from '../../src/formats/index.js';
import { checkOutDir, OUTPUTS_MANIFEST, publishOutputs, replaceOutputs, type OutputsContext } from '../../src/pipeline/outputs.js';
import { KilnError } from '../../src/errors.js';
import { requireOnHost } from './host-requirements.js';

function scratch(base = tmpdir()): string {
  return mkdtempSync(join(base, 'kiln-outputs-'));
}

/** A fake staging directory: the named files with the given contents. */
function stage(dir: string, files: Record<string, string>): string[] {
  mkdirSync(dir, { recursive: true });
  return Object.entries(files).map(([name, text]) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  });
}

/** Every file under dir (relative path -> content), the manifest left out. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const rel = join(e.parentPath, e.name).slice(dir.length + 1);
    if (rel !== OUTPUTS_MANIFEST) out[rel] = readFileSync(join(dir, rel), 'utf8');
  }
  return out;
}

function userFiles(out: string): void {
  mkdirSync(join(out, 'notes'), { recursive: true });
  writeFileSync(join(out, 'README.md'), 'mine\n');
  writeFileSync(join(out, 'notes', 'todo.txt'), 'also mine\n');
  writeFileSync(join(out, 'kiln.yaml'), 'name: web\n');
}

test('--out at a directory holding other files keeps them and adds the artifacts beside them', async () => {
  const d = scratch();
  try {
    const out = join(d, 'repo');
    userFiles(out);
    const staged = stage(join(d, 'staging'), { 'web-1.raw': 'raw 1', 'web-1.qcow2': 'qcow2 1' });
    const placed = await replaceOutputs(out, staged, { reserved: ['build.json'] });
    assert.deepEqual(tree(out), { 'README.md': 'mine\n', 'notes/todo.txt': 'also mine\n', 'kiln.yaml': 'name: web\n', 'web-1.raw': 'raw 1', 'web-1.qcow2': 'qcow2 1' });
    assert.deepEqual([...placed.values()], [join(out, 'web-1.raw'), join(out, 'web-1.qcow2')]);
    assert.deepEqual(JSON.parse(readFileSync(join(out, OUTPUTS_MANIFEST), 'utf8')).files, ['build.json', 'web-1.qcow2', 'web-1.raw']);
    assert.deepEqual(readdirSync(join(d, 'staging')), [], 'the staged files were moved, not copied');
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("a second build replaces Kiln's files and removes only its own stale ones", async () => {
  const d = scratch();
  try {
    const out = join(d, 'out');
    userFiles(out);
    await replaceOutputs(out, stage(join(d, 's1'), { 'web-1.raw': 'raw 1', 'web-1.qcow2': 'qcow2 1' }), { reserved: ['build.json'] });
    writeFileSync(join(out, 'build.json'), '{"build":1}');
    await replaceOutputs(out, stage(join(d, 's2'), { 'web-1.raw': 'raw 2', 'web-1.vmdk': 'vmdk 2' }), { reserved: ['build.json'] });
    assert.deepEqual(tree(out), {
      'README.md': 'mine\n', 'notes/todo.txt': 'also mine\n', 'kiln.yaml': 'name: web\n',
      'web-1.raw': 'raw 2', 'web-1.vmdk': 'vmdk 2', 'build.json': '{"build":1}',
    });
    assert.deepEqual(JSON.parse(readFileSync(join(out, OUTPUTS_MANIFEST), 'utf8')).files, ['build.json', 'web-1.raw', 'web-1.vmdk']);
    assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('.kiln-tmp-')), []);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('a new artifact named like a file Kiln did not write is refused, naming it, and nothing changes', async () => {
  const d = scratch();
  try {
    const out = join(d, 'out');
    userFiles(out);
    writeFileSync(join(out, 'web-1.qcow2'), 'the user\'s own disk');
    const staged = stage(join(d, 'staging'), { 'web-1.raw': 'raw 1', 'web-1.qcow2': 'qcow2 1' });
    const before = tree(out);
    await assert.rejects(replaceOutputs(out, staged, { reserved: ['build.json'] }), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.match(e.message, new RegExp(`${join(out, 'web-1.qcow2')} exists and was not written by Kiln`));
      assert.match(e.hint ?? '', /nothing in the out directory was changed/);
      return true;
    });
    assert.deepEqual(tree(out), before);
    assert.equal(existsSync(join(out, OUTPUTS_MANIFEST)), false);
    assert.deepEqual(readdirSync(join(d, 'staging')).sort(), ['web-1.qcow2', 'web-1.raw']);
    // build.json is Kiln's name too, once Kiln writes there.
    rmSync(join(out, 'web-1.qcow2'));
    writeFileSync(join(out, 'build.json'), 'theirs');
    await assert.rejects(replaceOutputs(out, staged, { reserved: ['build.json'] }), /build\.json exists and was not written by Kiln/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('a manifest naming paths outside the out directory never makes Kiln remove them', async () => {
  const d = scratch();
  try {
    const out = join(d, 'out');
    mkdirSync(out);
    writeFileSync(join(d, 'victim'), 'keep');
    writeFileSync(join(out, OUTPUTS_MANIFEST), JSON.stringify({ kiln: 1, files: ['../victim', '/etc/hostname', 'web-1.raw'] }));
    await replaceOutputs(out, stage(join(d, 's'), { 'web-1.qcow2': 'q' }));
    assert.equal(readFileSync(join(d, 'victim'), 'utf8'), 'keep');
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('staging and out on different filesystems: the artifacts are copied, holes kept, then renamed into place', async () => {
  requireOnHost('/dev/shm', 'the tmpfs these tests use as a second filesystem', 'mount a tmpfs there (systemd and Docker hosts have one)');
  const a = scratch('/dev/shm');
  const b = scratch('/var/tmp');
  try {
    assert.notEqual(statSync(a).dev, statSync(b).dev, 'two filesystems (a rename between them fails with EXDEV)');
    const out = join(b, 'out');
    userFiles(out);
    await replaceOutputs(out, stage(join(b, 's1'), { 'web-1.raw': 'old' }));
    const raw = join(a, 'web-1.raw');
    const fd = openSync(raw, 'w');
    const data = randomBytes(4096);
    writeSync(fd, data, 0, data.length, 32 << 20);
    ftruncateSync(fd, 64 << 20);
    closeSync(fd);
    const placed = await replaceOutputs(out, [raw, ...stage(a, { 'web-1.qcow2': 'qcow2' })]);
    assert.equal(placed.get(raw), join(out, 'web-1.raw'));
    const st = statSync(join(out, 'web-1.raw'));
    assert.equal(st.size, 64 << 20);
    assert.ok(st.blocks * 512 <= 64 * 1024, `the copy keeps the holes (${st.blocks * 512} bytes allocated)`);
    assert.deepEqual(readFileSync(join(out, 'web-1.raw')).subarray(32 << 20, (32 << 20) + 4096), data);
    assert.equal(readFileSync(join(out, 'README.md'), 'utf8'), 'mine\n');
    assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('.kiln-tmp-')), []);
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test("the build's artifact paths point at the final files; .kiln/out/<name>-<version> takes over an earlier Kiln's files", async () => {
  const d = scratch();
  try {
    const kilnDir = join(d, '.kiln');
    const out = join(kilnDir, 'out', 'web-1');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'web-1.raw'), 'from a Kiln before the manifest');
    writeFileSync(join(out, 'build.json'), '{}');
    const [raw, qcow2] = stage(join(d, 'work', 'out'), { 'web-1.raw': 'raw', 'web-1.qcow2': 'qcow2' });
    const ctx = { kilnDir, options: {}, template: { config: { name: 'web' } }, version: { version: '1' } } as unknown as OutputsContext;
    const artifacts = [{ format: 'raw', file: raw, size: 3, sha256: '', mediaType: '' }, { format: 'qcow2', file: qcow2, size: 5, sha256: '', mediaType: '' }] as Artifact[];
    const placed = await publishOutputs(ctx, artifacts);
    assert.equal(placed.outDir, out);
    assert.deepEqual(placed.artifacts.map((x) => x.file), [join(out, 'web-1.raw'), join(out, 'web-1.qcow2')]);
    assert.equal(readFileSync(join(out, 'web-1.raw'), 'utf8'), 'raw');
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('an interrupt while the outputs are staged puts the staged files back and changes nothing', async () => {
  const d = scratch();
  try {
    const out = join(d, 'out');
    userFiles(out);
    const staged = stage(join(d, 'staging'), { 'web-1.raw': 'raw 1', 'web-1.qcow2': 'qcow2 1' });
    const before = tree(out);
    let checks = 0;
    const signal = { throwIfAborted() { if (++checks === 2) throw new Error('interrupted by SIGINT'); } } as unknown as AbortSignal;
    await assert.rejects(replaceOutputs(out, staged, { signal }), /interrupted by SIGINT/);
    assert.deepEqual(tree(out), before);
    assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('.kiln')), []);
    assert.deepEqual(readdirSync(join(d, 'staging')).sort(), ['web-1.qcow2', 'web-1.raw']);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('a taken artifact name in --out is refused before the build starts work, and an --out that is a file too', async () => {
  const d = scratch();
  try {
    const out = join(d, 'out');
    userFiles(out);
    writeFileSync(join(out, 'web-1.qcow2'), 'mine');
    const ctx = { kilnDir: join(d, '.kiln'), options: { outDir: out }, template: { config: { name: 'web', formats: ['raw', 'qcow2'] } }, version: { version: '1' } } as unknown as OutputsContext;
    await assert.rejects(checkOutDir(ctx), new RegExp(`${join(out, 'web-1.qcow2')} exists and was not written by Kiln`));
    rmSync(join(out, 'web-1.qcow2'));
    await checkOutDir(ctx);
    await assert.rejects(replaceOutputs(join(out, 'README.md'), []), /README\.md is not a directory/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
