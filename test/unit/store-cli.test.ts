import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openStore } from '../../src/store/index.js';
import { publishFake, scratch, sha256File } from './store-fixtures.js';

const kiln = fileURLToPath(new URL('../../../bin/kiln.js', import.meta.url));
function run(args: string[], opts: { cwd?: string; input?: string } = {}) {
  const r = spawnSync(process.execPath, [kiln, ...args], { cwd: opts.cwd, input: opts.input, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('kiln releases / resolve / revoke / channel / verify over a layout store', async () => {
  const dir = scratch('kiln-cli-');
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  const a = await publishFake(store, dir, 'web', 'release-0.1.0');
  await publishFake(store, dir, 'web', 'release-0.2.0');
  await store.addCloudIds('web@release-0.1.0', { aws: { 'eu-west-1': 'ami-0abc' } });

  const ls = run(['releases', '--store', storeDir]);
  assert.equal(ls.code, 0, ls.err);
  assert.match(ls.out, /^NAME\s+VERSION\s+DATE\s+COMMIT\s+FORMATS\s+SOURCE\s+SIGNER\s+PARENT\s+PUBLISHED\s+STATUS/);
  assert.match(ls.out, /web\s+release-0\.1\.0\s+2023-11-14T22:13:20Z\s+aaaaaaaaaaaa\s+raw,qcow2\s+verified\s+-\s+-\s+aws:eu-west-1\s+ok/);

  const res = run(['resolve', 'web@release-0.1.0', '--format', 'qcow2', '--store', storeDir]);
  assert.equal(res.code, 0, res.err);
  const [path, cloud] = res.out.trim().split('\n');
  assert.equal(sha256File(path), a.artifacts[1].sha256);
  assert.equal(cloud, 'aws\teu-west-1\tami-0abc');
  const js = JSON.parse(run(['resolve', 'web@release-0.1.0', '--json', '--store', storeDir]).out) as { digest: string; artifacts: unknown[] };
  assert.equal(js.digest, a.digest);
  assert.equal(js.artifacts.length, 2);

  assert.equal(run(['channel', 'set', 'production', 'web@release-0.1.0', '--store', storeDir]).code, 0);
  assert.equal(run(['channel', 'set', 'production', 'web@release-0.2.0', '--store', storeDir]).code, 0);
  assert.equal(run(['channel', 'get', 'web@production', '--store', storeDir]).out, 'release-0.2.0\n');
  const log = run(['channel', 'get', 'web@production', '--log', '--store', storeDir]).out.trim().split('\n');
  assert.equal(log.length, 3);
  assert.match(log[2], /release-0\.2\.0\s+release-0\.1\.0/);

  const rv = run(['revoke', 'web@release-0.2.0', '--reason', 'kernel panic on boot', '--store', storeDir]);
  assert.equal(rv.code, 0, rv.err);
  const refused = run(['resolve', 'web@production', '--store', storeDir]);
  assert.equal(refused.code, 1);
  assert.match(refused.err, /revoked: kernel panic on boot/);
  assert.equal(run(['resolve', 'web@production', '--force', '--format', 'raw', '--store', storeDir]).code, 0);

  const ver = run(['verify', 'web@release-0.1.0', '--store', storeDir]);
  assert.equal(ver.code, 0, ver.err);
  assert.match(ver.out, /ok\s+web-release-0\.1\.0-[0-9a-f]+\.raw\s+sha256:/);
  assert.match(ver.out, /unsigned/);
  assert.equal(run(['resolve', 'nope', '--store', storeDir]).code, 2);
});

test('kiln resolve --terraform speaks the external data source protocol', async () => {
  const dir = scratch('kiln-cli-');
  const storeDir = join(dir, 'store');
  const store = await openStore(storeDir, dir);
  const a = await publishFake(store, dir, 'web', 'release-0.1.0');
  await store.addCloudIds('web@release-0.1.0', { aws: { 'us-east-1': 'ami-1' } });
  await store.channelSet('production', 'web@release-0.1.0');
  const ok = run(['resolve', '--terraform'], { input: JSON.stringify({ release: 'web@production', format: 'qcow2', store: storeDir }) });
  assert.equal(ok.code, 0, ok.err);
  const out = JSON.parse(ok.out) as Record<string, unknown>;
  assert.ok(Object.values(out).every((v) => typeof v === 'string'), 'every value is a string');
  assert.equal(out.version, 'release-0.1.0');
  assert.equal(out.channel, 'production');
  assert.equal(out.digest, a.digest);
  assert.equal(out.sha256, a.artifacts[1].sha256);
  assert.equal(sha256File(out.location as string), a.artifacts[1].sha256);
  assert.equal(out['aws_us-east-1'], 'ami-1');
  // From the directory holding the store as .kiln/store (the default), without a store key.
  const cwdStore = await openStore(join(dir, 'proj', '.kiln', 'store'), dir);
  await publishFake(cwdStore, dir, 'api', 'v1');
  const dflt = run(['resolve', '--terraform'], { cwd: join(dir, 'proj'), input: '{"release":"api@v1","format":"raw"}' });
  assert.equal(dflt.code, 0, dflt.err);
  assert.equal((JSON.parse(dflt.out) as Record<string, string>).version, 'v1');
  const bad = run(['resolve', '--terraform'], { input: JSON.stringify({ release: 'web@release-9', store: storeDir }) });
  assert.notEqual(bad.code, 0);
  assert.equal(bad.out, '');
  assert.match(bad.err, /no release web@release-9/);
});
