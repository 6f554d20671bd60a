/**
 * Compute Engine's naming rules applied to Kiln's names: image names, label values, the description
 * Kiln reads back (the exact version and the whole digest, which labels cannot hold).
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { GCE_LABEL_VALUE, GCE_NAME, gceDescription, gceImageName, gceLabels, labelValue, parseGceDescription } from '../../src/cloud/gce/names.js';
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
