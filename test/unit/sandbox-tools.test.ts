/** The tools tree cache: a locked build reuses a cached tree only when it is exactly the pinned one. */
import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { removeStaleWorkAreas } from '../../src/pipeline/steps/work-area.js';
import { treeDigest } from '../../src/cache-entry.js';
import { silentLogger } from '../../src/log.js';
import { cachedToolsFor, intactTree } from '../../src/sandbox/tools.js';

test('a cached tools tree is the pinned one only with the same InRelease and exactly the pinned packages', () => {
  const cache = mkdtempSync(join(tmpdir(), 'kiln-tools-'));
  const key = 'k'.repeat(64);
  mkdirSync(join(cache, 'tools', key, 'usr/bin'), { recursive: true });
  writeFileSync(join(cache, 'tools', key, 'usr/bin/ansible-playbook'), '');
  const installed = [{ name: 'ansible-core', version: '2.19.11-0+deb13u1', arch: 'all' }, { name: 'python3', version: '3.13.5-1', arch: 'amd64' }];
  writeFileSync(join(cache, 'tools', `${key}.json`), JSON.stringify({ suite: 'trixie', inRelease: 'a'.repeat(64), packages: installed, treeDigest: treeDigest(join(cache, 'tools', key)) }));
  const archive = { inRelease: 'a'.repeat(64) };
  const trust = { verified: true, inReleaseSha256: 'a'.repeat(64), archiveDate: 1, signingKeyFingerprint: 'F' };
  const pins = installed.map((p) => ({ name: p.name, version: p.version, architecture: p.arch }));
  const hit = cachedToolsFor(cache, 'trixie', { archive, packages: [...pins].reverse() }, trust);
  assert.equal(hit?.root, join(cache, 'tools', key));
  assert.equal(hit?.trust.inReleaseSha256, 'a'.repeat(64));
  assert.equal(cachedToolsFor(cache, 'trixie', { archive: { ...archive, inRelease: 'b'.repeat(64) }, packages: pins }, trust), undefined, 'another InRelease');
  assert.equal(cachedToolsFor(cache, 'trixie', { archive, packages: [pins[0], { ...pins[1], version: '3.13.5-2' }] }, trust), undefined, 'another version');
  assert.equal(cachedToolsFor(cache, 'trixie', { archive, packages: [pins[0]] }, trust), undefined, 'a package more in the tree');
  assert.equal(cachedToolsFor(cache, 'bookworm', { archive, packages: pins }, trust), undefined, 'another suite');
});

test('a cached tools tree with a file cut short by one byte, or recorded without a digest, is a miss and is removed', () => {
  const cache = mkdtempSync(join(tmpdir(), 'kiln-tools-'));
  const make = (key: string, digest: boolean) => {
    const root = join(cache, 'tools', key);
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    mkdirSync(join(root, 'usr/lib/python3'), { recursive: true });
    writeFileSync(join(root, 'usr/bin/ansible-playbook'), '#!/usr/bin/python3\nimport ansible\n');
    writeFileSync(join(root, 'usr/lib/python3/ansible.py'), 'x'.repeat(4096));
    symlinkSync('ansible-playbook', join(root, 'usr/bin/ansible'));
    writeFileSync(join(cache, 'tools', `${key}.json`), JSON.stringify({ suite: 'trixie', inRelease: 'a'.repeat(64), packages: [], ...(digest ? { treeDigest: treeDigest(root) } : {}) }));
    return root;
  };
  const warnings: string[] = [];
  const logger = { ...silentLogger, warn: (m: string) => { warnings.push(m); } };
  const good = make('g'.repeat(64), true);
  assert.equal(intactTree(join(cache, 'tools'), 'g'.repeat(64), logger), true);
  truncateSync(join(good, 'usr/lib/python3/ansible.py'), 4095);
  assert.equal(intactTree(join(cache, 'tools'), 'g'.repeat(64), logger), false);
  assert.match(warnings[0], /damaged .*a file changed or was cut short/);
  assert.equal(existsSync(good), false, 'the damaged tree is removed');
  make('o'.repeat(64), false);
  assert.equal(intactTree(join(cache, 'tools'), 'o'.repeat(64), logger), false);
  assert.match(warnings[1], /no tree digest/);
  // A changed link target, same sizes: the digest differs too.
  const linked = make('l'.repeat(64), true);
  rmSync(join(linked, 'usr/bin/ansible'));
  symlinkSync('/usr/bin/python3', join(linked, 'usr/bin/ansible'));
  assert.equal(intactTree(join(cache, 'tools'), 'l'.repeat(64), logger), false);
});

test('work areas of builds whose process is gone are removed; a live one stays', () => {
  const work = mkdtempSync(join(tmpdir(), 'kiln-work-'));
  const dead = join(work, '20261130T010101-999999999');
  const live = join(work, `20261130T010101-${process.pid}`);
  const parent = join(work, `validate-${process.ppid}`);
  for (const d of [dead, live, parent]) mkdirSync(join(d, 'root/etc'), { recursive: true });
  removeStaleWorkAreas(work);
  assert.equal(existsSync(dead), false);
  assert.equal(existsSync(live), true);
  assert.equal(existsSync(parent), true);
});
