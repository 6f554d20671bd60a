/** What reaches a child process: an allowlist of Kiln's environment, never the whole of it. */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { exec } from '../../src/exec.js';
import { HOST_ENV_ALLOWED, hostEnv, sandboxEnv } from '../../src/sandbox/env.js';
import { specText } from '../../src/sandbox/layout.js';

const secrets = {
  KILN_REGISTRY_PASSWORD: 'kiln-canary-1', KILN_SIGNING_PASSPHRASE: 'kiln-canary-2', KILN_SIGNING_KEY: '/keys/release',
  AWS_SECRET_ACCESS_KEY: 'kiln-canary-3', AZURE_CLIENT_SECRET: 'kiln-canary-4', GOOGLE_APPLICATION_CREDENTIALS: '/keys/gcp.json', SSH_AUTH_SOCK: '/tmp/agent.sock',
};

test('a host tool gets the allowed variables and the ones its call adds, nothing else', () => {
  const env = hostEnv({ LC_ALL: 'C' }, [], { ...secrets, PATH: '/usr/bin', HOME: '/root', http_proxy: 'http://proxy:3128' });
  assert.deepEqual(env, { PATH: '/usr/bin', HOME: '/root', http_proxy: 'http://proxy:3128', LC_ALL: 'C' });
  assert.deepEqual(hostEnv({}, ['SSH_AUTH_SOCK'], { ...secrets, PATH: '/bin' }), { PATH: '/bin', SSH_AUTH_SOCK: '/tmp/agent.sock' });
  for (const k of Object.keys(secrets)) assert.ok(!(HOST_ENV_ALLOWED as readonly string[]).includes(k), `${k} is not allowed by default`);
});

test("exec's children never see Kiln's secrets", async () => {
  Object.assign(process.env, secrets);
  try {
    const r = await exec('env', []);
    for (const [k, v] of Object.entries(secrets)) {
      assert.doesNotMatch(r.stdout, new RegExp(`^${k}=`, 'm'), `${k} is not passed on`);
      assert.ok(!r.stdout.includes(v));
    }
    assert.match(r.stdout, /^PATH=/m);
  } finally {
    for (const k of Object.keys(secrets)) delete process.env[k];
  }
});

test('the sandbox environment is fixed: nothing from the build host', () => {
  Object.assign(process.env, secrets);
  try {
    const env = sandboxEnv({ SOURCE_DATE_EPOCH: '1' });
    assert.deepEqual(Object.keys(env).sort(), ['HOME', 'LANG', 'LC_ALL', 'PATH', 'SOURCE_DATE_EPOCH', 'TZ']);
    assert.equal(env.HOME, '/root');
  } finally {
    for (const k of Object.keys(secrets)) delete process.env[k];
  }
});

test('a sandbox spec refuses paths that would break its format or escape', () => {
  assert.equal(specText([{ kind: 'bind', mode: 'ro', src: '/srv/repo', dst: '/repo' }]), 'bind\tro\t/srv/repo\t/repo\n');
  assert.throws(() => specText([{ kind: 'bind', mode: 'ro', src: '/srv/re\tpo', dst: '/repo' }]), /tab, newline or NUL/);
  assert.throws(() => specText([{ kind: 'bind', mode: 'ro', src: '/srv/re\npo', dst: '/repo' }]), /tab, newline or NUL/);
  assert.throws(() => specText([{ kind: 'bind', mode: 'ro', src: '/srv/repo', dst: '/image/../etc' }]), /absolute and normal/);
  assert.throws(() => specText([{ kind: 'tmpfs', mode: '0755', dst: 'run' }]), /absolute and normal/);
});
