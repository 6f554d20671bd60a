import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { kilnSchema } from '../../src/template/schema.js';

test('schema/kiln.schema.json (used by editors) is the schema kiln validates with', () => {
  const file = JSON.parse(readFileSync(new URL('../../../schema/kiln.schema.json', import.meta.url), 'utf8')) as unknown;
  assert.deepEqual(file, JSON.parse(JSON.stringify(kilnSchema)), 'regenerate with: node bin/kiln.js schema > schema/kiln.schema.json');
});
