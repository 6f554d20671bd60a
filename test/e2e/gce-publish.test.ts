/**
 * Issue 16 (GCE) on the real example release: `kiln publish --to gce`. Neither Cloud Storage nor Compute
 * Engine has an emulator here: both, and Google's OAuth token endpoint, are a stand-in
 * (test/support/gce-standin.ts: NOT Google; HTTPS with a self-signed certificate, bearer tokens for a
 * service account's signed JWTs, the JSON API's resumable uploads, long-running operations, the naming
 * and label rules, request bodies checked against the Compute SDK's own API description), driven by the
 * official SDKs with a service-account key as the application default credentials.
 *
 * The bytes are proven end to end: the stand-in makes the image as Compute Engine does, by unpacking
 * the uploaded tarball with GNU tar; that disk.raw has the release's raw sha256 and boots under UEFI.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bootVm } from '../../src/vm/qemu.js';
import { startGceStandin, type GceStandin } from '../support/gce-standin.js';
import { artifact, builtExample, E2E_DIR, envRecordingPath, filesHolding, freshWorkDir, KILN, kiln, RUN_ID, type BuiltExample } from './fixture.js';

const REF = 'web@release-0.1.0';

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 4 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

describe('kiln publish --to gce (against the Google Cloud stand-in)', () => {
  let built: BuiltExample;
  let gce: GceStandin;
  let work: string;
  let publisher: string;
  let env: NodeJS.ProcessEnv;
  const outputs: string[] = [];
  const run = async (args: string[], cwd = publisher, extra: NodeJS.ProcessEnv = {}) => {
    const r = await kiln(args, { cwd, env: { ...env, ...extra } });
    outputs.push(r.stdout, r.stderr);
    return r;
  };
  const kilnYaml = (extra: string[] = []) => [
    'name: web', 'source:', '  debian: {}', 'provision:', '  playbook: site.yml',
    'release:', `  store: ${JSON.stringify(join(built.dir, '.kiln', 'store'))}`,
    'publish:', '  gce:', `    project: ${gce.project}`, '    bucket: kiln-images',
    `    compute_endpoint: ${gce.url}`, `    storage_endpoint: ${gce.url}`, ...extra.map((l) => `    ${l}`), '',
  ].join('\n');
  const publisherDir = (name: string, extra: string[] = []) => {
    const d = join(work, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'site.yml'), '- hosts: all\n  tasks: []\n');
    writeFileSync(join(d, 'kiln.yaml'), kilnYaml(extra));
    return d;
  };

  before(async () => {
    built = await builtExample();
    work = freshWorkDir('gce-publish');
    gce = await startGceStandin({ dir: join(work, 'standin'), pollsBeforeDone: 1 });
    publisher = publisherDir('publisher');
    env = {
      // The stand-in's CA, and its proxy: the SDKs send the key's signed assertion to Google's token
      // hosts whatever the key file says, and the stand-in serves those two hosts (and no other).
      GOOGLE_APPLICATION_CREDENTIALS: gce.credentialsFile, ...gce.env,
      KILN_STATE_DIR: join(work, 'state'), PATH: envRecordingPath(work, ['zstd', 'unshare']),
    };
  });
  after(async () => { await gce?.close(); });

  let published: { project: string; image: string; path: string; family: string; existing: boolean; object: string; sent: number; seconds: number };
  let boot: Promise<void> | undefined;

  test('publishes the release: the tarball uploaded in resumable chunks, an image with family, features and labels, the tarball then deleted', async () => {
    const r = await run(['publish', REF, '--to', 'gce', '--json']);
    assert.equal(r.code, 0, r.stderr);
    published = JSON.parse(r.stdout);
    const tar = built.record.artifacts.find((a) => a.format === 'gce');
    assert.ok(tar);
    assert.deepEqual({ ...published, sent: 0, seconds: 0 }, {
      project: gce.project, image: 'web-release-0-1-0', path: `projects/${gce.project}/global/images/web-release-0-1-0`, family: 'web',
      existing: false, object: `gs://kiln-images/kiln/web-release-0.1.0-${built.record.release?.digest.slice(7, 19)}.tar.gz`, sent: 0, seconds: 0,
    });
    assert.equal(published.sent, tar.size);
    const [img] = gce.images();
    assert.equal(img.status, 'READY');
    assert.equal(img.family, 'web');
    assert.deepEqual([...img.guestOsFeatures].sort(), ['GVNIC', 'UEFI_COMPATIBLE', 'VIRTIO_SCSI_MULTIQUEUE']);
    assert.equal(img.labels['image-version'], 'release-0-1-0');
    assert.equal(img.labels['kiln-image'], 'web');
    assert.equal(img.labels['kiln-digest'], built.record.release?.digest.slice(7, 70));
    assert.equal(img.labels['kiln-commit'], built.record.commit);
    assert.equal(img.description, `web@release-0.1.0 built by Kiln; release ${built.record.release?.digest}; commit ${built.record.commit}`);
    assert.equal(img.archiveSizeBytes, tar.size);
    assert.equal(img.diskSizeGb, 2);
    assert.match(r.stderr, /gce: deleted gs:\/\/kiln-images\/kiln\/web-release-0\.1\.0-/);
    assert.deepEqual(gce.objects(), [], 'the tarball is gone once the image holds its own copy');
    // The upload went in chunks (32 MiB, multiples of 256 KiB), one session; every request was answered.
    assert.equal(gce.uploadSessions().length, 1);
    assert.deepEqual(gce.requests.filter((q) => q.status >= 400 && !(q.method === 'GET' && q.status === 404)), []);
  });

  test("the image's disk, unpacked from the uploaded tarball as Compute Engine does, is the release's raw disk byte for byte, and boots under UEFI", async () => {
    const [img] = gce.images();
    const raw = artifact(built, 'raw');
    assert.equal(statSync(img.diskFile).size, statSync(raw).size);
    assert.equal(await sha256Of(img.diskFile), built.record.artifacts.find((a) => a.format === 'raw')?.sha256);
    // Booted while the next tests run (TCG takes a core; they mostly wait on I/O). Awaited below.
    boot = (async () => {
      const vm = await bootVm({ image: img.diskFile, format: 'raw', firmware: 'uefi', cpus: 1, timeoutSec: 480, cloudConfig: ['ssh_deletekeys: false', 'ssh_genkeytypes: []'] });
      try {
        assert.match((await vm.ssh('cat /etc/release')).stdout, /^IMAGE_VERSION=release-0\.1\.0$/m);
        assert.equal((await vm.ssh('test -d /sys/firmware/efi && echo uefi')).stdout.trim(), 'uefi');
      } finally {
        await vm.stop();
      }
    })();
    boot.catch(() => undefined);
  });

  test('kiln resolve --cloud gce, --terraform and kiln releases show the image', async () => {
    const r = await run(['resolve', REF, '--cloud', 'gce']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), published.path);
    const p = await run(['resolve', REF, '--cloud', 'gce', '--region', gce.project, '--json']);
    assert.equal(JSON.parse(p.stdout).imageId, published.path);
    const ls = await run(['releases', 'web']);
    assert.match(ls.stdout, new RegExp(`release-0\\.1\\.0 .*gce:${gce.project}`));
    // Terraform's external data source: the query on stdin, image_id what boot_disk.initialize_params.image takes.
    const tf = await new Promise<string>((res, rej) => {
      const c = spawn(process.execPath, [KILN, 'resolve', '--terraform'], { cwd: publisher, env: { ...process.env, ...env } });
      let out = '';
      c.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      c.on('close', (code) => (code === 0 ? res(out) : rej(new Error(`exit ${code}`))));
      c.stdin.end(JSON.stringify({ release: REF, store: join(built.dir, '.kiln', 'store'), cloud: 'gce' }));
    });
    const t = JSON.parse(tf) as Record<string, string>;
    assert.equal(t.image_id, published.path);
    assert.equal(t.region, gce.project);
  });

  test('publishing again sends nothing and creates nothing', async () => {
    // What changes something: not a read, nor the token (through the proxy's tunnel).
    const writes = () => gce.requests.filter((q) => !['GET', 'CONNECT'].includes(q.method) && !/token/.test(q.path));
    const before = writes().length;
    const r = await run(['publish', REF, '--to', 'gce', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const again = JSON.parse(r.stdout) as typeof published;
    assert.equal(again.existing, true);
    assert.equal(again.sent, 0);
    assert.equal(again.path, published.path);
    assert.deepEqual(writes().slice(before), [], 'only reads (and a token)');
    assert.equal(gce.images().length, 1);
  });

  test('an upload killed midway resumes on the next run where the service says it stopped, and completes', async () => {
    const other = publisherDir('publisher2', ['image_prefix: web2', 'keep_object: true']);
    // Killed once the stand-in holds at least one 32 MiB chunk of the tarball.
    let child: { kill(s: NodeJS.Signals): boolean } | undefined;
    const poll = setInterval(() => {
      if (child && gce.uploadSessions().some((s) => s.state === 'open' && s.received >= 32 * 1024 * 1024)) child.kill('SIGKILL');
    }, 20);
    const killed = await kiln(['publish', REF, '--to', 'gce'], { cwd: other, env, onStderr: (_chunk, c) => { child = c; } });
    clearInterval(poll);
    outputs.push(killed.stdout, killed.stderr);
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    // What was on the wire when the run died is still being taken in: wait until the count holds still.
    const held = () => gce.uploadSessions().find((s) => s.state === 'open')?.received ?? 0;
    for (let last = -1; held() !== last;) { last = held(); await new Promise((res) => setTimeout(res, 300)); }
    const session = gce.uploadSessions().find((s) => s.state === 'open');
    assert.ok(session && session.received > 0, `a session holds part of the tarball: ${JSON.stringify(gce.uploadSessions())}`);
    assert.ok(readdirSync(join(work, 'state', 'uploads')).length === 1, 'the session URI was kept for the next run');
    assert.equal(gce.images().filter((i) => i.name === 'web2-release-0-1-0').length, 0, 'no image from a partial upload');
    const r = await kiln(['publish', REF, '--to', 'gce', '--json'], { cwd: other, env });
    outputs.push(r.stdout, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /gce: resuming the interrupted upload of gs:\/\/kiln-images\/kiln\/web-release-0\.1\.0-[0-9a-f]{12}\.tar\.gz \(started [^)]+\) at [0-9.]+ [KMG]iB/);
    const p2 = JSON.parse(r.stdout) as typeof published;
    assert.equal(p2.sent, published.sent - session.received, 'the resumed run sent only what the service did not hold');
    assert.equal(readdirSync(join(work, 'state', 'uploads')).length, 0, 'the session is forgotten once complete');
    const img = gce.images().find((i) => i.name === 'web2-release-0-1-0');
    assert.equal(img?.status, 'READY');
    assert.equal(await sha256Of(img.diskFile), built.record.artifacts.find((a) => a.format === 'raw')?.sha256);
    const [obj] = gce.objects();
    assert.equal(obj.metadata['kiln-release-digest'], built.record.release?.digest, 'keep_object: the tarball stays, with whose it is');
    assert.equal(await sha256Of(obj.file), built.record.artifacts.find((a) => a.format === 'gce')?.sha256);
  });

  test('the booted image answered (the boot started above)', async () => {
    assert.ok(boot, 'the boot was started');
    await boot;
  });

  test('a service-account key the token endpoint does not accept: the error names the call and the fix', async () => {
    const bad = join(work, 'bad-key.json');
    const key = JSON.parse(readFileSync(gce.credentialsFile, 'utf8')) as Record<string, string>;
    // Another key pair under the same account: the JWT's signature does not verify.
    const other = execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    writeFileSync(bad, JSON.stringify({ ...key, private_key: other }), { mode: 0o600 });
    const r = await run(['publish', REF, '--to', 'gce'], publisher, { GOOGLE_APPLICATION_CREDENTIALS: bad });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /reading the image projects\/kiln-test\/global\/images\/web-release-0-1-0 failed: no usable Google credentials/);
    assert.match(r.stderr, /hint: set GOOGLE_APPLICATION_CREDENTIALS/);
    assert.doesNotMatch(r.stderr, /internal error/);
  });

  test('the private key and every token appear in no output, log, store file or host command environment', () => {
    // The key as one line of its body (a leak may be JSON-escaped or re-wrapped), and the tokens as issued.
    const secrets = gce.secrets().map((s) => (s.includes('PRIVATE KEY') ? s.split('\n').filter((l) => l.length === 64)[3] ?? s : s));
    assert.ok(secrets.length >= 2 && secrets.every((s) => s.length >= 40), 'a key and at least one token');
    const seen = filesHolding([join(built.dir, '.kiln', 'store'), join(E2E_DIR, RUN_ID, 'logs'), join(work, 'state')], secrets);
    for (const o of outputs) for (const s of secrets) if (o.includes(s)) seen.push('kiln output');
    const dumps = readdirSync(work).filter((f) => f.startsWith('env-'));
    assert.ok(dumps.some((f) => f.startsWith('env-unshare')), `host commands ran through the shims: ${dumps.join(', ')}`);
    for (const f of dumps) {
      const text = readFileSync(join(work, f), 'utf8');
      if (secrets.some((s) => text.includes(s)) || /^GOOGLE_/m.test(text)) seen.push(`environment of ${f}`);
    }
    assert.deepEqual(seen, []);
  });
});
