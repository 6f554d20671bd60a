/**
 * A separate process that publishes one release, for the concurrency and kill -9 tests.
 * argv: storeDir workDir name version [pause]. With "pause" it stops halfway through copying the
 * large artifact (printing MID) so the parent can kill it mid-copy. With "same" its artifact's
 * bytes follow from name and version (two children publish the same content) and its record's
 * build time is its pid (so their manifests differ, as two runners' do).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeProvenance, makeSbom, openStore } from '../../src/store/index.js';
import { fakeArtifacts, fakeRecord } from './store-fixtures.js';

const [storeDir, workDir, name, version, mode] = process.argv.slice(2);
const store = await openStore(storeDir, '/');
const same = (): ReturnType<typeof fakeArtifacts> => {
  const data = Buffer.alloc(8 << 20, createHash('sha256').update(`${name}@${version}`).digest());
  const dir = join(workDir, String(process.pid));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}-${version}.raw`);
  writeFileSync(file, data);
  return [{ format: 'raw', file, size: data.length, sha256: createHash('sha256').update(data).digest('hex') }];
};
const artifacts = mode === 'same' ? same() : fakeArtifacts(workDir, name, version, { raw: 8 << 20 });
const record = fakeRecord(name, version, mode === 'same' ? { buildDurationSeconds: process.pid } : {});
let paused = false;
try {
  const r = await store.publish({
    record, artifacts, sbom: makeSbom(record), provenance: makeProvenance(record, artifacts),
    onProgress: (_f, done, total) => {
      if (mode === 'pause' && !paused && done > total / 2) {
        paused = true;
        process.stdout.write('MID\n');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30_000);
      }
    },
  });
  process.stdout.write(`OK ${r.digest}${r.identical ? ' identical' : ''}\n`);
} catch (e) {
  process.stdout.write(`FAIL ${(e as Error).message}\n`);
  process.exitCode = 3;
}
