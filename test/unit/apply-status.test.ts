/**
 * `kiln status`'s decisions without hosts: where a host stands against a channel, the exit status CI
 * reads, and the table.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { position, statusExitCode, statusTable, type HostState } from '../../src/apply/status.js';

const ch = { name: 'web', version: 'release-0.10.0' };

test('a host against a channel: behind, current or ahead by the version\'s numbers; another image; versions that cannot be ordered', () => {
  assert.equal(position({ image: 'web', version: 'release-0.9.1' }, ch), 'behind', '0.9.1 < 0.10.0 as numbers');
  assert.equal(position({ image: 'web', version: 'release-0.10.0' }, ch), 'current');
  assert.equal(position({ image: 'web', version: 'release-0.11.0' }, ch), 'ahead');
  assert.equal(position({ image: 'db', version: 'release-0.10.0' }, ch), 'other image');
  assert.equal(position({ image: 'web', version: 'stable' }, ch), 'differs');
});

test('the exit status: 4 when any host could not be read, else 3 on drift or a host not checked, else 0 (behind a channel is not an error)', () => {
  const ok: HostState = { host: 'a:22', id: 'a_22', image: 'web', version: 'release-0.9.1', channel: { ref: 'web@prod', version: 'release-0.10.0', position: 'behind' } };
  assert.equal(statusExitCode([ok]), 0);
  assert.equal(statusExitCode([{ ...ok, drift: 'in sync' }]), 0);
  assert.equal(statusExitCode([{ ...ok, drift: 'in sync' }, { ...ok, id: 'b', drift: 'drift', changed: ['x'] }]), 3);
  assert.equal(statusExitCode([{ ...ok, drift: 'not checked' }]), 3, 'a host Kiln could not check is not reported in sync');
  assert.equal(statusExitCode([{ ...ok, drift: 'drift' }, { host: 'c:22', id: 'c_22', problem: 'unreachable: Connection refused' }]), 4);
});

test('the table: one row per host, the channel and config columns when asked, and each task that would change', () => {
  const lines = statusTable([
    { host: 'a:22', id: 'a_22', image: 'web', version: 'release-0.9.1', commit: 'f'.repeat(40), channel: { ref: 'web@prod', version: 'release-0.10.0', position: 'behind' }, drift: 'drift', changed: ['web : Write the config'] },
    { host: 'b:2222', id: 'b_2222', problem: 'unreachable: ssh: connect to host b port 2222: Connection refused' },
  ], { check: true, channel: 'web@prod' });
  assert.deepEqual(lines, [
    'HOST    IMAGE  VERSION        COMMIT        WEB@PROD                 CONFIG          NOTE',
    `a:22    web    release-0.9.1  ${'f'.repeat(12)}  behind (release-0.10.0)  drift (1 task)`,
    'b:2222  -      -              -             -                        -               unreachable: ssh: connect to host b port 2222: Connection refused',
    '  a:22: would change: web : Write the config',
  ]);
});
