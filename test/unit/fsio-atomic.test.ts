import { strict as assert } from 'node:assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeFileAtomic } from '../../src/fsio.js';

test('writeFileAtomic replaces the content and leaves no temporary file beside it', () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-atomic-'));
  try {
    const f = join(d, 'record.json');
    writeFileAtomic(f, '{"a":1}');
    writeFileAtomic(f, '{"a":2}');
    assert.equal(readFileSync(f, 'utf8'), '{"a":2}');
    assert.deepEqual(readdirSync(d), ['record.json']);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
