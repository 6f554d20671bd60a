import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, lutimesSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { aptListName, lockEntries, parsePackagesIndex, parseStanzas, repoRelease, repoStanza } from '../../src/lock/packages-index.js';
import { compareInstalled, explainLockedFailure } from '../../src/pipeline/steps/lock.js';
import { diffTrees } from '../../src/reproduce/treediff.js';
import { KilnError } from '../../src/errors.js';

const INDEX = `Package: nginx
Version: 1.22.1-9+deb12u9
Architecture: amd64
Depends: nginx-common (= 1.22.1-9+deb12u9),
 libc6 (>= 2.34)
Filename: pool/main/n/nginx/nginx_1.22.1-9+deb12u9_amd64.deb
Size: 527944
SHA256: ${'1'.repeat(64)}

Package: adduser
Version: 3.134
Architecture: all
Filename: pool/main/a/adduser/adduser_3.134_all.deb
Size: 183272
SHA256: ${'2'.repeat(64)}
`;

test('a Packages index is parsed by name, architecture and version, continuation lines kept', () => {
  const s = parseStanzas(INDEX);
  assert.equal(s.length, 2);
  assert.equal(s[0].get('Depends'), 'nginx-common (= 1.22.1-9+deb12u9),\n libc6 (>= 2.34)');
  const idx = parsePackagesIndex(INDEX);
  assert.deepEqual(idx.get('adduser:all=3.134'), { name: 'adduser', version: '3.134', architecture: 'all', sha256: '2'.repeat(64), filename: 'pool/main/a/adduser/adduser_3.134_all.deb', size: 183272 });
  const entries = lockEntries([{ name: 'nginx', version: '1.22.1-9+deb12u9', arch: 'amd64' }], idx);
  assert.equal(entries[0].sha256, '1'.repeat(64));
});

test('an installed package missing from the signed index cannot be locked, and is named', () => {
  const idx = parsePackagesIndex(INDEX);
  assert.throws(() => lockEntries([{ name: 'nginx', version: '1.22.1-9+deb12u8', arch: 'amd64' }, { name: 'kiln-demo-app', version: '1.0', arch: 'all' }], idx),
    (e: unknown) => e instanceof KilnError && /2 installed package\(s\)/.test(e.message) && /nginx 1\.22\.1-9\+deb12u8 \(amd64\)/.test(e.message) && /kiln-demo-app 1\.0/.test(e.message));
});

test("apt's list file names", () => {
  assert.equal(aptListName('http://deb.debian.org/debian', 'dists/bookworm/main/binary-amd64/Packages'), 'deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages');
  assert.equal(aptListName('http://deb.debian.org/debian/', 'dists/bookworm/InRelease'), 'deb.debian.org_debian_dists_bookworm_InRelease');
  assert.equal(aptListName('http://127.0.0.1:8080/my_repo', 'dists/x/InRelease'), '127.0.0.1:8080_my%5frepo_dists_x_InRelease');
});

test('the local repository stanza replaces where the .deb is and keeps its control fields', () => {
  const control = 'Package: adduser\nVersion: 3.134\nArchitecture: all\nPriority: important\nSHA256: stale\n';
  const p = { name: 'adduser', version: '3.134', architecture: 'all', sha256: '2'.repeat(64), size: 183272, filename: 'pool/x.deb' };
  const st = repoStanza(control, p, `debs/${p.sha256}.deb`);
  assert.equal(st, `Package: adduser\nVersion: 3.134\nArchitecture: all\nPriority: important\nFilename: debs/${'2'.repeat(64)}.deb\nSize: 183272\nSHA256: ${'2'.repeat(64)}\n`);
  const rel = repoRelease('3'.repeat(64), 42, 1783764997);
  assert.match(rel, /^Date: Sat, 11 Jul 2026 10:16:37 UTC$/m);
  assert.match(rel, new RegExp(` ${'3'.repeat(64)} 42 Packages`));
});

test('a locked build names the package the playbook asked for outside the lock', () => {
  const state = { packages: [{ name: 'nginx', version: '1.22.1-9', architecture: 'amd64' }] } as never;
  const e = explainLockedFailure(new KilnError("task failed: Install tools: No package matching 'tree' is available", { where: { file: 'roles/web/tasks/main.yml', line: 3 } }), state) as KilnError;
  assert.match(e.message, /outside the lock: package 'tree' is not in kiln\.lock/);
  assert.match(e.hint ?? '', /kiln lock --update/);
  assert.equal(e.where.line, 3);
  const other = new KilnError('task failed: Copy: permission denied');
  assert.equal(explainLockedFailure(other, state), other);
});

test('installed packages are compared with the lock', () => {
  const lock = { packages: [{ name: 'a', version: '1', architecture: 'amd64' }, { name: 'b', version: '2', architecture: 'all' }] } as never;
  assert.deepEqual(compareInstalled([{ name: 'a', version: '1', arch: 'amd64' }, { name: 'c', version: '3', arch: 'amd64' }], lock), { unlocked: ['c 3 (amd64)'], unused: ['b 2'] });
});

test('diffTrees lists content, mode, type and presence differences in path order', async () => {
  const base = mkdtempSync(join(tmpdir(), 'kiln-treediff-'));
  try {
    const a = join(base, 'a');
    const b = join(base, 'b');
    for (const d of [a, b]) {
      mkdirSync(join(d, 'etc'), { recursive: true });
      writeFileSync(join(d, 'etc/same'), 'x');
      writeFileSync(join(d, 'etc/mode'), 'x');
      chmodSync(join(d, 'etc/mode'), 0o644);
    }
    writeFileSync(join(a, 'etc/shadow'), 'app:!:20781:0');
    writeFileSync(join(b, 'etc/shadow'), 'app:!:20758:0');
    chmodSync(join(b, 'etc/mode'), 0o600);
    writeFileSync(join(a, 'only-a'), '');
    symlinkSync('x', join(b, 'only-b'));
    writeFileSync(join(a, 'kind'), '');
    symlinkSync('x', join(b, 'kind'));
    // Times are compared too: make them equal, so only what the test changed differs.
    for (const d of [a, b]) for (const p of execFileSync('find', [d], { encoding: 'utf8' }).trim().split('\n')) lutimesSync(p, 1_700_000_000, 1_700_000_000);
    const diffs = await diffTrees(a, b);
    assert.deepEqual(diffs.map((x) => `${x.path}: ${x.what.join(', ')}`), [
      '/etc/mode: mode 644 -> 600',
      '/etc/shadow: content',
      '/kind: type file -> symlink',
      '/only-a: only in the release',
      '/only-b: only in the rebuild',
    ]);
    assert.equal((await diffTrees(a, b, { limit: 2 })).length, 2);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('the signed text of an InRelease and the index hashes it gives', async () => {
  const { signedText, releaseHashes } = await import('../../src/source/inrelease.js');
  const inRelease = [
    '-----BEGIN PGP SIGNED MESSAGE-----', 'Hash: SHA512', '',
    'Origin: Debian', 'SHA256:', ` ${'1'.repeat(64)}   123 main/binary-amd64/Packages.xz`, ` ${'2'.repeat(64)}   456 main/binary-amd64/Packages`,
    '- -dash escaped line', '-----BEGIN PGP SIGNATURE-----', 'xyz', '-----END PGP SIGNATURE-----',
    // Text after the signature is not signed and must not count.
    'SHA256:', ` ${'9'.repeat(64)}   1 main/binary-amd64/Packages.xz`, '',
  ].join('\n');
  const text = signedText(inRelease);
  assert.match(text, /^-dash escaped line$/m);
  assert.doesNotMatch(text, /9{64}/);
  assert.deepEqual(releaseHashes(text).get('main/binary-amd64/Packages.xz'), { sha256: '1'.repeat(64), size: 123 });
  assert.throws(() => signedText('Origin: Debian\n'), /not a clearsigned message/);
});
