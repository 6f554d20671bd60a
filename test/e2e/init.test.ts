/**
 * `kiln init` makes an image repository that builds as it is: the README's four commands (init, commit,
 * tag, build) give a sealed release whose disk holds what the role wrote (the motd template with the
 * version, the SSH drop-in that sshd -G validated in the build sandbox).
 */
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { freshWorkDir, git, kiln, readFromDisk } from './fixture.js';

test('kiln init && git add -A && git commit -m init && git tag release-0.1.0 && kiln build: a release', async () => {
  const dir = join(freshWorkDir('init'), 'hello world');
  const init = await kiln(['init', dir], { cwd: freshWorkDir('init-cwd') });
  assert.equal(init.code, 0, init.stderr);
  assert.match(init.stderr, /^initialised a git repository and wrote image hello-world in /m);
  assert.ok(existsSync(join(dir, '.git')));
  git(dir, 'add', '-A');
  git(dir, 'commit', '-qm', 'init');
  git(dir, 'tag', 'release-0.1.0');
  assert.equal(git(dir, 'status', '--porcelain'), '', 'nothing kiln init wrote is left out of the commit (.kiln/ is ignored)');
  const b = await kiln(['build', '--json'], { cwd: dir });
  assert.equal(b.code, 0, b.stderr.slice(-4000));
  const rec = JSON.parse(b.stdout) as { name: string; version: string; artifacts: { format: string; file: string }[]; release?: { digest: string } };
  assert.equal(rec.name, 'hello-world');
  assert.equal(rec.version, 'release-0.1.0');
  assert.deepEqual(rec.artifacts.map((a) => a.format).sort(), ['qcow2', 'raw']);
  assert.match(rec.release?.digest ?? '', /^sha256:[0-9a-f]{64}$/);
  const raw = rec.artifacts.find((a) => a.format === 'raw')!.file;
  assert.equal(await readFromDisk(raw, '/etc/motd'), 'Built by Kiln.\nImage hello-world release-0.1.0\n');
  assert.match(await readFromDisk(raw, '/etc/ssh/sshd_config.d/50-kiln.conf'), /^PasswordAuthentication no$/m);
  // The handler's restart was deferred to first boot, and the release resolves.
  assert.match(b.stderr, /deferred to first boot \(nothing runs while an image is built\): restart ssh/);
  const r = await kiln(['resolve', 'hello-world@release-0.1.0', '--format', 'qcow2', '--json'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
});
