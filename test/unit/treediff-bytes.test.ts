/** kiln rebuild's last resort when two trees are equal but the raws differ: the first differing byte offsets (src/reproduce/treediff.ts). */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { firstDifferingBytes } from '../../src/reproduce/treediff.js';

test('the differing byte offsets (0-based), at most max of them, and their count', async () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-bytes-'));
  try {
    writeFileSync(join(d, 'a'), 'abcdefgh');
    writeFileSync(join(d, 'b'), 'abXdeYgZ');
    assert.deepEqual(await firstDifferingBytes(join(d, 'a'), join(d, 'b')), { count: 3, offsets: [2, 5, 7] });
    assert.deepEqual(await firstDifferingBytes(join(d, 'a'), join(d, 'b'), 2), { count: 3, offsets: [2, 5] });
    assert.deepEqual(await firstDifferingBytes(join(d, 'a'), join(d, 'a')), { count: 0, offsets: [] });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
