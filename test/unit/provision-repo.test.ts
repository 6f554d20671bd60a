/** What of the repository the build sandbox gets: the files git knows, never a signing key. */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { copyRepository, repositoryFiles, signingKeyFiles } from '../../src/provision/chroot.js';
import type { KilnConfig } from '../../src/template/schema.js';

test('the sandbox gets the tracked and untracked-but-not-ignored files, links as links, and no signing key', async () => {
  const repo = mkdtempSync(join(tmpdir(), 'kiln-repo-'));
  const git = (...a: string[]) => execFileSync('git', ['-C', repo, '-c', 'user.email=t@k', '-c', 'user.name=t', ...a]);
  git('init', '-q');
  mkdirSync(join(repo, 'roles/web/tasks'), { recursive: true });
  mkdirSync(join(repo, 'keys'));
  writeFileSync(join(repo, 'playbook.yml'), '- hosts: all\n');
  writeFileSync(join(repo, 'roles/web/tasks/main.yml'), '[]\n', { mode: 0o600 });
  symlinkSync('web', join(repo, 'roles/www'));
  writeFileSync(join(repo, 'keys/release'), '-----BEGIN OPENSSH PRIVATE KEY-----\n');
  writeFileSync(join(repo, 'keys/env-key'), 'secret\n');
  writeFileSync(join(repo, '.gitignore'), '.kiln\nsecrets.yml\n');
  writeFileSync(join(repo, 'secrets.yml'), 'password: x\n');
  mkdirSync(join(repo, '.kiln/work'), { recursive: true });
  writeFileSync(join(repo, '.kiln/work/junk'), 'x');
  git('add', '-A');
  git('commit', '-qm', 'repo');
  writeFileSync(join(repo, 'notes.txt'), 'untracked, not ignored\n');

  const files = await repositoryFiles(repo);
  const config = { release: { store: '.kiln/store', sign: { ssh_key: 'keys/release' } } } as unknown as KilnConfig;
  process.env.KILN_SIGNING_KEY = join(repo, 'keys/env-key');
  let exclude: string[];
  try { exclude = signingKeyFiles(config, repo); } finally { delete process.env.KILN_SIGNING_KEY; }
  const to = join(mkdtempSync(join(tmpdir(), 'kiln-repo-copy-')), 'repo');
  copyRepository(repo, files, to, exclude);

  assert.equal(readFileSync(join(to, 'playbook.yml'), 'utf8'), '- hosts: all\n');
  assert.equal(lstatSync(join(to, 'roles/web/tasks/main.yml')).mode & 0o777, 0o600, 'modes are kept');
  assert.equal(readlinkSync(join(to, 'roles/www')), 'web');
  assert.ok(existsSync(join(to, 'notes.txt')));
  for (const f of ['keys/release', 'keys/env-key', 'secrets.yml', '.kiln/work/junk', '.git']) assert.equal(existsSync(join(to, f)), false, `${f} is not copied`);
});
