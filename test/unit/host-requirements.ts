import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';

/**
 * Fails, never skips, when something a test needs on the host is missing. npm test installs every
 * test tool first (scripts/setup-host.sh --tests), so a missing one is a broken setup to be seen,
 * not a test to pass over (and CI fails on any skipped test).
 */
export function requireOnHost(path: string, what: string, fix = 'run: sudo bash scripts/setup-host.sh --tests'): void {
  assert.ok(existsSync(path), `${path} is missing (${what}); ${fix}`);
}
