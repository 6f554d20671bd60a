import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { missingTools } from '../../src/cli/doctor.js';
import { hasTool } from '../../src/exec.js';

interface HostPackages { hostTools: string[][]; testTools: string[][]; hostPackages: string[]; testPackages: string[] }
const lists = async () => (await import(new URL('../../../scripts/host-packages.mjs', import.meta.url).href)) as HostPackages;

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

test("kiln doctor checks only Kiln's own tools, never a tool only the tests run", async () => {
  const { testTools, testPackages, hostPackages } = await lists();
  const checked = new Set((await missingTools()).map((t) => t.check));
  const r = spawnSync(process.execPath, [new URL('../../../bin/kiln.js', import.meta.url).pathname, 'doctor', '--check'], { encoding: 'utf8', env: { ...process.env, PATH: '/nonexistent' } });
  for (const [command, pkg] of testTools) {
    assert.ok(!checked.has(command));
    assert.doesNotMatch(r.stderr, new RegExp(`package ${pkg}\\)`), `kiln doctor names the test-only package ${pkg}`);
  }
  for (const p of ['skopeo', 'docker-registry', 'apache2-utils']) assert.ok(testPackages.includes(p) && !hostPackages.includes(p), p);
});

// A test that needs one of these fails on its own when it is missing; this names them all at once.
test('the tools only the tests run are installed (npm test runs scripts/setup-host.sh --tests first)', async () => {
  const missing: string[] = [];
  for (const [command, pkg] of (await lists()).testTools) {
    if (!(command.startsWith('/') ? existsSync(command) : await hasTool(command))) missing.push(`${command} (package ${pkg})`);
  }
  assert.deepEqual(missing, [], `missing test tools: ${missing.join(', ')}; run: sudo bash scripts/setup-host.sh --tests`);
});
