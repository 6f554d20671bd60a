/** What `kiln rebuild` refuses before git or the file system sees the record (no build runs). */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { rebuildRelease } from '../../src/reproduce/rebuild.js';
import { silentLogger } from '../../src/log.js';
import type { ReleaseStore } from '../../src/store/release-store.js';
import { fakeRecord } from './store-fixtures.js';

/** A store holding one release record, as read back from a shared store that may have been altered. */
function storeWith(record: ReturnType<typeof fakeRecord>): ReleaseStore {
  return {
    resolve: async () => ({ name: record.name, version: record.version, artifacts: [], signers: [] }),
    trust: { requireSignature: false, keys: [] },
    entry: async () => ({ name: record.name, version: record.version, record }),
  } as unknown as ReleaseStore;
}

test('a record whose commit is not a full hex commit id is not handed to git', async () => {
  for (const commit of ['--orphan=x', 'HEAD', 'a'.repeat(12)]) {
    const record = fakeRecord('web', 'release-0.1.0', { git: { commit, tag: 'release-0.1.0' } });
    await assert.rejects(rebuildRelease({ ref: 'web@release-0.1.0', repoDir: '/nonexistent', store: storeWith(record), logger: silentLogger }),
      /^KilnError: release web@release-0\.1\.0 records commit ".*", which is not a full git commit id/, commit);
  }
});

test('a record whose kiln.yaml path leaves the repository is refused', async () => {
  for (const template of ['../kiln.yaml', '/etc/kiln.yaml', 'a/../../kiln.yaml']) {
    const record = fakeRecord('web', 'release-0.1.0', { template });
    await assert.rejects(rebuildRelease({ ref: 'web@release-0.1.0', repoDir: '/nonexistent', store: storeWith(record), logger: silentLogger }),
      /^KilnError: release web@release-0\.1\.0 records its kiln\.yaml as ".*", which is not a relative path inside the repository$/, template);
  }
});
