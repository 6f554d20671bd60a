import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { missingTools } from '../../src/cli/doctor.js';

// npm test installs the host tools first (scripts/setup-host.sh), from the same list doctor checks.
test('kiln doctor finds every host tool after setup (same list as scripts/setup-host.sh)', async () => {
  assert.deepEqual((await missingTools()).map((t) => t.check), []);
  const r = spawnSync(process.execPath, [new URL('../../../bin/kiln.js', import.meta.url).pathname, 'doctor', '--check'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /all host tools are present/);
});

test('kiln doctor --check reports a missing tool with its package and exits 1', () => {
  const r = spawnSync(process.execPath, [new URL('../../../bin/kiln.js', import.meta.url).pathname, 'doctor', '--check'], { encoding: 'utf8', env: { ...process.env, PATH: '/nonexistent' } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /missing: mmdebstrap \(package mmdebstrap\)/);
});
