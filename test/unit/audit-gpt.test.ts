import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { crc32, guidAt, LINUX_DATA, parseGptEntries, parseGptHeader, ROOT_X86_64, rootCandidates } from '../../src/audit/gpt.js';

test('crc32 is the IEEE CRC the GPT header uses', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32(Buffer.alloc(0)), 0);
});

test('GUIDs read mixed-endian as the UEFI spec stores them', () => {
  const b = Buffer.from('28732ac11ff8d211ba4b00a0c93ec93b', 'hex');
  assert.equal(guidAt(b, 0), 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
});

test('the GPT sfdisk writes parses to the same partitions, and a damaged header is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-gpt-test-'));
  try {
    const disk = join(dir, 'd.raw');
    execFileSync('truncate', ['-s', '8M', disk]);
    execFileSync('sfdisk', ['-q', disk], {
      input: 'label: gpt\nlabel-id: 11111111-2222-3333-4444-555555555555\n'
        + 'start=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=AAAAAAAA-0000-0000-0000-000000000001, name=ESP\n'
        + `start=4096, size=4096, type=${LINUX_DATA}, uuid=AAAAAAAA-0000-0000-0000-000000000002, name=data\n`
        + `start=8192, size=4096, type=${ROOT_X86_64}, uuid=AAAAAAAA-0000-0000-0000-000000000003, name=root\n`,
    });
    const bytes = readFileSync(disk);
    const h = parseGptHeader(bytes.subarray(512, 1024), 512);
    assert.ok(h);
    assert.deepEqual(h, { sectorSize: 512, entriesLba: 2, entryCount: 128, entrySize: 128 });
    const parts = parseGptEntries(bytes.subarray(1024, 1024 + 128 * 128), h);
    assert.deepEqual(parts.map((p) => [p.number, p.type, p.guid, p.firstLba, p.lastLba, p.name]), [
      [1, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'AAAAAAAA-0000-0000-0000-000000000001', 2048, 4095, 'ESP'],
      [2, LINUX_DATA, 'AAAAAAAA-0000-0000-0000-000000000002', 4096, 8191, 'data'],
      [3, ROOT_X86_64, 'AAAAAAAA-0000-0000-0000-000000000003', 8192, 12287, 'root'],
    ]);
    assert.deepEqual(rootCandidates(parts).map((p) => p.number), [3, 2], 'the x86-64 root type wins over generic Linux data');
    const damaged = Buffer.from(bytes.subarray(512, 1024));
    damaged[80] ^= 1;
    assert.equal(parseGptHeader(damaged, 512), undefined);
    assert.equal(parseGptHeader(Buffer.alloc(512), 512), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
