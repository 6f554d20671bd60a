/**
 * A separate process that publishes one release, for the concurrency and kill -9 tests.
 * argv: storeDir workDir name version [pause]. With "pause" it stops halfway through copying the
 * large artifact (printing MID) so the parent can kill it mid-copy.
 */
import { makeProvenance, makeSbom, openStore } from '../../src/store/index.js';
import { fakeArtifacts, fakeRecord } from './store-fixtures.js';

const [storeDir, workDir, name, version, mode] = process.argv.slice(2);
const store = await openStore(storeDir, '/');
const artifacts = fakeArtifacts(workDir, name, version, { raw: 8 << 20 });
const record = fakeRecord(name, version);
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
  process.stdout.write(`OK ${r.digest}\n`);
} catch (e) {
  process.stdout.write(`FAIL ${(e as Error).message}\n`);
  process.exitCode = 3;
}
