/**
 * The GCE parts that need no service: Compute Engine's naming rules applied to Kiln's names (image
 * names, label values, the description Kiln reads back: the exact version and the whole digest, which
 * labels cannot hold), and the retry of a mutating call under one request id.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { GCE_LABEL_VALUE, GCE_NAME, gceDescription, gceImageName, gceLabels, labelValue, parseGceDescription } from '../../src/cloud/gce/names.js';
import { withRequestId } from '../../src/cloud/gce/publish.js';
import { KilnError } from '../../src/errors.js';

const rel = { name: 'web', version: 'release-0.1.0', digest: `sha256:${'ab'.repeat(32)}`, commit: 'c0ffee'.padEnd(40, '1') };

test('a Kiln version becomes a label value and an image name; the exact version stays in the description', () => {
  assert.equal(labelValue('release-0.1.0'), 'release-0-1-0');
  assert.equal(labelValue('Release_2.0+build.7'), 'release_2-0-build-7');
  assert.equal(labelValue('x'.repeat(80)).length, 63);
  assert.equal(gceImageName('web', 'release-0.1.0'), 'web-release-0-1-0');
  assert.equal(gceImageName('web', 'v1.0.'), 'web-v1-0', 'no trailing dash: a name ends with a letter or digit');
  const labels = gceLabels(rel);
  assert.deepEqual(labels, { 'image-version': 'release-0-1-0', 'kiln-image': 'web', 'kiln-digest': 'ab'.repeat(32).slice(0, 63), 'kiln-commit': rel.commit });
  for (const v of Object.values(labels)) assert.match(v, GCE_LABEL_VALUE);
  assert.deepEqual(parseGceDescription(gceDescription(rel)), rel);
  assert.equal(parseGceDescription('an image someone else made'), undefined);
  assert.equal(parseGceDescription(undefined), undefined);
});

test('an image name Compute Engine would refuse is refused here, with the setting that fixes it', () => {
  for (const [prefix, version] of [['9web', 'release-1'], ['web', 'x'.repeat(70)], ['Web', 'release-1']]) {
    assert.throws(() => gceImageName(prefix, version), (e: unknown) => e instanceof KilnError && /image_prefix/.test(e.hint ?? ''), `${prefix} ${version}`);
  }
  assert.match(gceImageName('a', 'release-0.1.0'), GCE_NAME);
});

test('a mutating call is retried on a reset connection or a 5xx with the same request id, and not on other errors', async () => {
  const ids: string[] = [];
  const op = await withRequestId(async (id) => {
    ids.push(id);
    if (ids.length === 1) throw Object.assign(new Error('request to https://compute failed, reason: socket hang up'), { code: 'ECONNRESET' });
    if (ids.length === 2) throw Object.assign(new Error('backend error'), { code: 503 });
    return [{ latestResponse: { name: 'operation-1', status: 'RUNNING' } }];
  });
  assert.deepEqual(op, { name: 'operation-1', status: 'RUNNING' });
  assert.equal(ids.length, 3);
  assert.equal(new Set(ids).size, 1, 'one request id for every try: Compute answers a repeated one with the first operation');
  assert.match(ids[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  let tries = 0;
  await assert.rejects(withRequestId(async () => { tries++; throw Object.assign(new Error('alreadyExists'), { code: 409 }); }), /alreadyExists/);
  assert.equal(tries, 1);
});
