import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

// withLock (src/store/lock.ts) across processes that all start at one instant: never two holders at once.
// Before the lock was written beside and linked into place, a lock read between its creation and its
// write looked stale and was broken: 18 to 28 of 40 entries overlapped here.
test('eight processes starting at one instant never hold the lock together', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-lock-race-'));
  try {
    const lockJs = new URL('../../src/store/lock.js', import.meta.url).href;
    const log = join(dir, 'log');
    const startAt = Date.now() + 1500;
    const script = `import { withLock } from ${JSON.stringify(lockJs)}; import { appendFileSync } from 'node:fs';
      while (Date.now() < ${startAt}) {}
      for (let i = 0; i < 5; i++) await withLock(${JSON.stringify(join(dir, 'l.lock'))}, async () => { appendFileSync(${JSON.stringify(log)}, 'in\\n'); await new Promise((r) => setTimeout(r, 20)); appendFileSync(${JSON.stringify(log)}, 'out\\n'); }, 60000);`;
    const codes = await Promise.all(Array.from({ length: 8 }, () => new Promise<number | null>((res) => spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' }).on('close', res))));
    assert.deepEqual(codes, Array(8).fill(0));
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    assert.equal(lines.length, 80);
    let holders = 0;
    for (const l of lines) { holders += l === 'in' ? 1 : -1; assert.ok(holders <= 1, `two holders at once (entry ${lines.indexOf(l)})`); }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
