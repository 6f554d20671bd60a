import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { rootOffset } from '../../src/audit/image.js';
import { isExtSuperblock, rootCandidates } from '../../src/image/root-fs.js';
import { parseGpt, PART_TYPE } from '../../src/disk/gpt.js';

test('the audit prefers the x86-64 root type over generic Linux data, and needs an ext filesystem there', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-gpt-test-'));
  try {
    const disk = join(dir, 'd.raw');
    execFileSync('truncate', ['-s', '8M', disk]);
    execFileSync('sfdisk', ['-q', disk], {
      input: 'label: gpt\n'
        + 'start=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP\n'
        + `start=4096, size=4096, type=${PART_TYPE.linuxData}, name=data\n`
        + `start=8192, size=4096, type=${PART_TYPE.rootX86_64}, name=root\n`,
    });
    const { entries } = parseGpt(readFileSync(disk));
    assert.deepEqual(rootCandidates(entries).map((p) => p.firstLba), [8192, 4096]);
    assert.throws(() => rootOffset(disk), /no ext4 root partition/, 'no filesystem in either candidate');
    const fs = join(dir, 'fs.img');
    execFileSync('mke2fs', ['-q', '-t', 'ext4', fs, '2M']);
    execFileSync('dd', [`if=${fs}`, `of=${disk}`, 'bs=512', 'seek=4096', 'conv=notrunc', 'status=none']);
    assert.equal(rootOffset(disk), 4096 * 512, 'the Linux data partition holds the filesystem');
    assert.ok(isExtSuperblock(readFileSync(fs).subarray(0, 2048)));
    assert.equal(rootOffset(fs), 0, 'a bare filesystem image is its own root');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
