/** Starts Debian's docker-registry on 127.0.0.1 for a test, optionally with htpasswd (bcrypt) basic auth. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { scratch } from './store-fixtures.js';
import { requireOnHost } from './host-requirements.js';

export interface TestRegistry { port: number; url: string; dir: string; proc: ChildProcess; stop(): Promise<void> }

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function startRegistry(auth?: { user: string; password: string }): Promise<TestRegistry> {
  requireOnHost('/usr/bin/docker-registry', 'package docker-registry');
  if (auth) requireOnHost('/usr/bin/htpasswd', 'package apache2-utils');
  const dir = scratch('kiln-registry-');
  const port = await freePort();
  mkdirSync(join(dir, 'data'));
  let authYaml = '';
  if (auth) {
    execFileSync('htpasswd', ['-B', '-b', '-c', join(dir, 'htpasswd'), auth.user, auth.password], { stdio: 'ignore' });
    authYaml = `auth:\n  htpasswd:\n    realm: kiln-test\n    path: ${join(dir, 'htpasswd')}\n`;
  }
  const config = join(dir, 'config.yml');
  writeFileSync(config, `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n${authYaml}`);
  const proc = spawn('/usr/bin/docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => { err += d; });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`${url}/v2/`);
      await r.arrayBuffer();
      if (r.status === 200 || r.status === 401) break;
    } catch { /* not up yet */ }
    if (i > 100 || proc.exitCode !== null) throw new Error(`docker-registry did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port, url, dir, proc,
    // Its storage goes with it: an end-to-end registry holds gigabytes of releases and cache entries.
    stop: () => new Promise<void>((resolve) => {
      const done = () => { rmSync(dir, { recursive: true, force: true }); resolve(); };
      if (proc.exitCode !== null) return done();
      proc.on('close', done);
      proc.kill('SIGTERM');
    }),
  };
}
