import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { auditImage, rootOffset } from '../../src/audit/image.js';
import { inspectDiskFile } from '../../src/image/disk-file.js';
import type { Finding } from '../../src/audit/finding.js';
import { buildDisk, buildFixture, type Expected } from './seal-fixture.js';

const key = (f: Expected | Finding) => `${f.check} ${f.path}`;
const work = mkdtempSync(join(tmpdir(), 'kiln-audit-image-test-'));
const raw = join(work, 'disk.raw');
let planted: Expected[] = [];

before(() => {
  planted = buildFixture(join(work, 'tree')).planted;
  buildDisk(join(work, 'tree'), raw);
});
after(() => rmSync(work, { recursive: true, force: true }));

function assertExactly(findings: Finding[], expected: Expected[]): void {
  const got = findings.map(key).sort();
  const want = expected.map(key).sort();
  assert.deepEqual(got.filter((g) => !want.includes(g)), [], 'reported but not planted');
  assert.deepEqual(want.filter((w) => !got.includes(w)), [], 'planted but not reported');
  assert.equal(got.length, new Set(got).size, 'one finding per path');
  for (const f of findings) assert.ok(f.message.length > 5, `${f.path} has a message`);
}

test('the root partition is found from the GPT, after the BIOS boot partition', () => {
  assert.equal(rootOffset(raw), 4096 * 512);
});

test('auditing the raw fixture disk reports each planted problem with its check and path, and nothing else', async () => {
  const scratch = join(work, 'scratch-raw');
  mkdirSync(scratch);
  const findings = await auditImage(raw, { workDir: scratch });
  assertExactly(findings, planted);
  assert.deepEqual(readdirSync(scratch), [], 'temporary files are removed');
});

test('a qcow2 conversion of the fixture audits the same, detected or named', async () => {
  const qcow2 = join(work, 'disk.qcow2');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  assert.equal(inspectDiskFile(qcow2).format, 'qcow2');
  const scratch = join(work, 'scratch-qcow2');
  mkdirSync(scratch);
  assertExactly(await auditImage(qcow2, { workDir: scratch }), planted);
  assert.deepEqual(readdirSync(scratch), [], 'the temporary raw is removed');
  assertExactly(await auditImage(qcow2, { format: 'qcow2', disable: ['logs'] }), planted.filter((p) => p.check !== 'logs'));
});

test('a fixed VHD is detected as raw and still audits correctly; --format vpc reads it too', async () => {
  const vhd = join(work, 'disk.vhd');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size', raw, vhd]);
  assert.equal(inspectDiskFile(vhd).format, 'raw');
  assertExactly(await auditImage(vhd), planted);
  assertExactly(await auditImage(vhd, { format: 'vpc' }), planted);
});

test('an image without a Linux root partition is a clear error', async () => {
  const empty = join(work, 'empty.raw');
  execFileSync('truncate', ['-s', '4M', empty]);
  execFileSync('sfdisk', ['-q', empty], { input: 'label: gpt\nstart=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n' });
  await assert.rejects(auditImage(empty), /no ext4 root partition/);
  await assert.rejects(auditImage(join(work, 'missing.raw')), /no such image/);
});
