/**
 * kiln diff's parts: changelog entries between two versions (dpkg's order), package and file changes,
 * and diffSides on two small real disks (GPT + ext4 from files, read through fuse2fs) in a real git
 * repository: packages with their changelogs, files added/removed/changed (content, mode), the
 * repository's files, seal settings, sizes. A changelog link that points out of the image is not followed.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeProvenance, makeSbom, openStore } from '../../src/store/index.js';
import { fakeRecord } from './store-fixtures.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { entriesBetween, parseChangelog, readImageChangelog, versionLess } from '../../src/diff/changelog.js';
import { checkedRaw, diffPackages, diffSides, fileChanges, type DiffSide } from '../../src/diff/index.js';
import { diffText, paint } from '../../src/diff/text.js';
import { sha256OfFile } from '../../src/fsio.js';
import { silentLogger } from '../../src/log.js';
import { buildDisk } from './seal-fixture.js';

let work: string;
before(() => { work = mkdtempSync(join(tmpdir(), 'kiln-diff-')); });
after(() => rmSync(work, { recursive: true, force: true }));

const CHANGELOG = `openssl (3.0.15-1~deb12u1) bookworm-security; urgency=medium

  * New upstream version.
  * Fix CVE-2024-5535 (SSL_select_next_proto buffer overread).
  * Fix CVE-2024-9143.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sat, 26 Oct 2024 10:00:00 +0200

openssl (3.0.14-1~deb12u2) bookworm; urgency=medium

  * Stable update: rebuild.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sun, 01 Sep 2024 10:00:00 +0200

openssl (3.0.14-1~deb12u1) bookworm; urgency=medium

  * New upstream version.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sat, 01 Jun 2024 10:00:00 +0200
`;

test('changelog entries between two versions, newest first, in dpkg order, with the CVEs they name', () => {
  const all = parseChangelog(CHANGELOG);
  assert.deepEqual(all.map((e) => e.version), ['3.0.15-1~deb12u1', '3.0.14-1~deb12u2', '3.0.14-1~deb12u1']);
  assert.equal(all[0].distribution, 'bookworm-security');
  assert.equal(all[0].urgency, 'medium');
  assert.equal(all[0].date, 'Sat, 26 Oct 2024 10:00:00 +0200');
  assert.deepEqual(all[0].cves, ['CVE-2024-5535', 'CVE-2024-9143']);
  assert.equal(all[0].security, true);
  assert.equal(all[1].security, false);
  // ~ sorts before anything: 3.0.14-1~deb12u1 < 3.0.14-1~deb12u2 < 3.0.15-1~deb12u1; an epoch outranks all.
  assert.equal(versionLess('3.0.14-1~deb12u1', '3.0.14-1~deb12u2'), true);
  assert.equal(versionLess('1:1.0', '2.0'), false);
  assert.deepEqual(entriesBetween(all, '3.0.14-1~deb12u1', '3.0.15-1~deb12u1').map((e) => e.version), ['3.0.15-1~deb12u1', '3.0.14-1~deb12u2']);
  assert.deepEqual(entriesBetween(all, '3.0.14-1~deb12u2', '3.0.14-1~deb12u2'), []);
});

test('packages added, removed and changed (upgrade or downgrade), by name and architecture', () => {
  const p = (name: string, version: string, arch = 'amd64') => ({ name, version, arch });
  const r = diffPackages([p('a', '1'), p('b', '1'), p('c', '2'), p('lib', '1', 'i386')], [p('a', '1'), p('c', '1'), p('d', '1'), p('lib', '1', 'amd64')], versionLess);
  assert.deepEqual(r.added.map((x) => `${x.name}:${x.arch}`), ['d:amd64', 'lib:amd64']);
  assert.deepEqual(r.removed.map((x) => `${x.name}:${x.arch}`), ['b:amd64', 'lib:i386']);
  assert.deepEqual(r.changed.map((c) => [c.name, c.from, c.to, c.direction]), [['c', '2', '1', 'downgrade']]);
  assert.equal(r.unchanged, 1);
});

test('file changes: mtimes and link counts are not changes; additions and removals are', () => {
  assert.deepEqual(fileChanges([
    { path: '/etc/x', what: ['mtime 1 -> 2'] }, { path: '/etc/y', what: ['mtime 1 -> 2', 'content'] },
    { path: '/n', what: ['only in b'] }, { path: '/o', what: ['only in a'] }, { path: '/l', what: ['links 1 -> 2'] },
  ]), [{ path: '/etc/y', change: 'changed', what: ['content'] }, { path: '/n', change: 'added', what: [] }, { path: '/o', change: 'removed', what: [] }]);
});

function tree(dir: string, files: Record<string, string | { text: string; mode: number } | Buffer>): string {
  for (const [p, v] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    if (typeof v === 'string' || Buffer.isBuffer(v)) writeFileSync(join(dir, p), v);
    else { writeFileSync(join(dir, p), v.text); chmodSync(join(dir, p), v.mode); }
  }
  return dir;
}

const git = (cwd: string, ...args: string[]) => execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@e', ...args], { cwd, encoding: 'utf8' }).trim();

test('two disks in a repository: packages with changelog entries, files, repository changes, seal settings, sizes; a snapshot whose disk changed is refused', async () => {
  const older = parseChangelog(CHANGELOG).slice(1);
  const olderText = CHANGELOG.slice(CHANGELOG.indexOf('openssl (3.0.14-1~deb12u2)'));
  assert.equal(older.length, 2);
  const ta = tree(join(work, 'ta'), {
    'etc/release': 'web release-0.1.0\n', 'etc/motd': 'hello\n', 'usr/bin/tool': { text: '#!/bin/sh\n', mode: 0o755 }, 'opt/old': 'gone\n',
    'usr/share/doc/openssl/changelog.Debian.gz': gzipSync(olderText),
  });
  const tb = tree(join(work, 'tb'), {
    'etc/release': 'web release-0.2.0\n', 'etc/motd': 'hello again\n', 'usr/bin/tool': { text: '#!/bin/sh\n', mode: 0o700 }, 'usr/bin/htop': 'new\n',
    'usr/share/doc/openssl/changelog.Debian.gz': gzipSync(CHANGELOG),
  });
  const [da, db] = [join(work, 'a.raw'), join(work, 'b.raw')];
  buildDisk(ta, da);
  buildDisk(tb, db);
  const repo = join(work, 'repo');
  mkdirSync(repo);
  git(repo, 'init', '-q');
  // kiln.yaml in a folder of the repository (as record.template says), so the command run at the top finds no kiln.yaml to load.
  mkdirSync(join(repo, 'img'));
  writeFileSync(join(repo, 'img/kiln.yaml'), 'name: web\nseal:\n  keep: []\n');
  writeFileSync(join(repo, 'img/playbook.yml'), '- hosts: all\n  tasks: []\n');
  git(repo, 'add', '-A');
  git(repo, 'commit', '-qm', 'one');
  const c1 = git(repo, 'rev-parse', 'HEAD');
  writeFileSync(join(repo, 'img/kiln.yaml'), 'name: web\nseal:\n  keep: [/etc/motd]\n');
  writeFileSync(join(repo, 'img/playbook.yml'), '- hosts: all\n  tasks:\n    - ansible.builtin.apt: {name: htop}\n');
  git(repo, 'commit', '-qam', 'two');
  const c2 = git(repo, 'rev-parse', 'HEAD');
  const side = (label: string, commit: string, raw: string, packages: DiffSide['packages']): DiffSide => ({
    label, name: 'web', version: label.split('@')[1], kind: 'release', commit, template: 'img/kiln.yaml', packages,
    artifacts: [{ format: 'raw', size: label.endsWith('1.0') ? 1000 : 1500, sha256: '0'.repeat(64) }], raw, signers: ['ops@example'],
  });
  const a = side('web@release-0.1.0', c1, da, [{ name: 'openssl', version: '3.0.14-1~deb12u2', arch: 'amd64' }, { name: 'nano', version: '7.2-1', arch: 'amd64' }]);
  const b = side('web@release-0.2.0', c2, db, [{ name: 'openssl', version: '3.0.15-1~deb12u1', arch: 'amd64' }, { name: 'htop', version: '3.2.2-2', arch: 'amd64' }]);
  const r = await diffSides(a, b, { cwd: repo, scratch: work, logger: silentLogger });
  assert.deepEqual(r.packages.added.map((p) => p.name), ['htop']);
  assert.deepEqual(r.packages.removed.map((p) => p.name), ['nano']);
  assert.equal(r.packages.changed.length, 1);
  const ssl = r.packages.changed[0];
  assert.deepEqual(ssl.changelog?.map((e) => e.version), ['3.0.15-1~deb12u1']);
  assert.deepEqual(ssl.cves, ['CVE-2024-5535', 'CVE-2024-9143']);
  assert.equal(ssl.security, true);
  const files = Object.fromEntries((r.files ?? []).map((f) => [f.path, `${f.change}${f.what.length ? ` ${f.what.join(', ')}` : ''}`]));
  assert.equal(files['/usr/bin/htop'], 'added');
  assert.equal(files['/opt/old'], 'removed');
  assert.equal(files['/opt'], 'removed');
  assert.equal(files['/etc/motd'], 'changed size 6 -> 12');
  assert.equal(files['/etc/release'], 'changed content');
  assert.equal(files['/usr/bin/tool'], 'changed mode 755 -> 700');
  assert.match(files['/usr/share/doc/openssl/changelog.Debian.gz'], /^changed size/);
  assert.deepEqual(r.git?.files.map((f) => [f.status, f.path, f.added, f.removed]), [['M', 'img/kiln.yaml', 1, 1], ['M', 'img/playbook.yml', 2, 1]]);
  assert.match(r.git?.patch ?? '', /\+    - ansible\.builtin\.apt: \{name: htop\}/);
  assert.deepEqual(r.settings, [{ key: 'seal.keep', a: [], b: ['/etc/motd'] }]);
  assert.deepEqual(r.artifacts, [{ format: 'raw', a: 1000, b: 1500 }]);
  // The text: grouped, no colour codes unless asked.
  const text = diffText(r, paint(false));
  assert.match(text, /^Packages: 1 added, 1 removed, 1 changed \(1 with security fixes\), 0 unchanged$/m);
  assert.match(text, /^ {2}~ openssl 3\.0\.14-1~deb12u2 -> 3\.0\.15-1~deb12u1 security: CVE-2024-5535, CVE-2024-9143$/m);
  assert.match(text, /^Files: 1 added, 2 removed, \d+ changed \(and what every release changes, the version stamp and filesystem ids: \/etc\/release\)$/m);
  assert.match(text, /^ {2}~ seal\.keep: \[\] -> \["\/etc\/motd"\]$/m);
  assert.doesNotMatch(text, /\x1b\[/);
  assert.match(diffText(r, paint(true)), /\x1b\[32m {2}\+ htop/);
  // A snapshot's raw disk is hashed against its record.
  assert.equal(await checkedRaw(db, await sha256OfFile(db)), db);
  await assert.rejects(checkedRaw(db, '1'.repeat(64)), /does not match its build record/);

  // The command: a release in a store (its raw disk is disk a) against a snapshot build's directory (disk b).
  const storeDir = join(work, 'store');
  const store = await openStore(storeDir, work);
  const rec = fakeRecord('web', 'release-0.1.0', { git: { commit: c1 }, template: 'img/kiln.yaml', source: { packages: a.packages } });
  const art = { format: 'raw', file: da, size: statSync(da).size, sha256: await sha256OfFile(da) };
  const full = { ...rec, artifacts: [{ format: 'raw', file: 'a.raw', size: art.size, sha256: art.sha256 }] };
  await store.publish({ record: rec, artifacts: [art], sbom: makeSbom(full), provenance: makeProvenance(full, [art]) });
  const snap = join(work, 'snapshot');
  mkdirSync(snap);
  writeFileSync(join(snap, 'build.json'), JSON.stringify({ name: 'web', version: 'snapshot-1490532', snapshot: true, commit: c2, template: 'img/kiln.yaml', packages: b.packages, artifacts: [{ format: 'raw', file: db, size: statSync(db).size, sha256: await sha256OfFile(db) }] }));
  const run = (...args: string[]) => spawnSync(process.execPath, [fileURLToPath(new URL('../../../bin/kiln.js', import.meta.url)), 'diff', ...args, '--store', storeDir], { cwd: repo, encoding: 'utf8', env: { ...process.env, KILN_STATE_DIR: join(work, 'state') } });
  const cli = run('web@release-0.1.0', snap, '--json');
  assert.equal(cli.status, 0, cli.stderr);
  const j = JSON.parse(cli.stdout) as typeof r;
  assert.equal(j.b.kind, 'snapshot');
  assert.deepEqual(j.packages.changed.map((c) => [c.name, c.security]), [['openssl', true]]);
  assert.equal(j.files?.find((f) => f.path === '/usr/bin/htop')?.change, 'added');
  assert.equal(j.git?.files.length, 2);
  // A snapshot whose disk was changed after its build is refused, naming the file.
  writeFileSync(join(snap, 'build.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(snap, 'build.json'), 'utf8')), artifacts: [{ format: 'raw', file: db, size: 1, sha256: '2'.repeat(64) }] }));
  const bad = run('web@release-0.1.0', snap);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /b\.raw does not match its build record/);
  const usage = run('web@release-0.1.0');
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /kiln diff takes two releases or build directories, got 1/);
});

test('a changelog link that points out of the image is resolved inside it, never read from the host', () => {
  const root = join(work, 'hostile');
  mkdirSync(join(root, 'usr/share/doc/evil'), { recursive: true });
  // On the host this would be a real gzip file; inside the image the path does not exist.
  const hostFile = join(work, 'host-secret.gz');
  writeFileSync(hostFile, gzipSync('evil (9.9) unstable; urgency=high\n\n  * host secret\n\n -- x <x@x>  Mon, 01 Jan 2024 00:00:00 +0000\n'));
  symlinkSync(hostFile, join(root, 'usr/share/doc/evil/changelog.Debian.gz'));
  assert.equal(readImageChangelog(root, 'evil'), undefined);
  // A link inside the image is followed inside it (Debian links doc directories of related packages).
  mkdirSync(join(root, 'usr/share/doc/libgood-common'), { recursive: true });
  writeFileSync(join(root, 'usr/share/doc/libgood-common/changelog.Debian.gz'), gzipSync(CHANGELOG));
  symlinkSync('libgood-common', join(root, 'usr/share/doc/libgood'));
  assert.equal(readImageChangelog(root, 'libgood')?.length, 3);
  assert.equal(readImageChangelog(root, '../../etc'), undefined);
});
