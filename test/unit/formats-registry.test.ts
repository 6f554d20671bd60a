import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { artifactFileName } from '../../src/formats/names.js';
import { BOOT_ORDER, FORMAT_SPECS, FORMATS, formatMediaType } from '../../src/formats/registry.js';
import { kilnSchema } from '../../src/template/schema.js';
import { artifactLayer } from '../../src/store/record.js';

const readme = readFileSync(join(import.meta.dirname, '..', '..', '..', 'README.md'), 'utf8');

/** Rows of the first Markdown table after a heading, as arrays of cell texts without backticks. */
function tableAfter(heading: string): string[][] {
  const at = readme.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README has "${heading}"`);
  const lines = readme.slice(at).split('\n');
  const first = lines.findIndex((l) => l.startsWith('|'));
  const rows: string[][] = [];
  for (const l of lines.slice(first + 2)) {
    if (!l.startsWith('|')) break;
    rows.push(l.split('|').slice(1, -1).map((c) => c.trim().replace(/`/g, '')));
  }
  return rows;
}

test("the README's Formats table is the registry: every format, its suffix and what takes it, in order", () => {
  const rows = tableAfter('## Formats');
  assert.deepEqual(rows.map((r) => [r[0], r[1], r[2]]), FORMAT_SPECS.map((f) => [f.name, f.suffix, f.for]));
});

test('every media type a release carries for a format is the one the README documents', () => {
  const release = tableAfter('### What a release is').find((r) => r[0] === 'one layer per format');
  assert.ok(release, 'the release table has a row for the format layers');
  // `application/vnd.kiln.disk.{raw,qcow2}` stands for one type per name in the braces.
  const expand = [...release[1].matchAll(/application\/[a-z0-9.+-]*(?:\{([^}]*)\}([a-z0-9.+-]*))?/g)]
    .flatMap((m) => (m[1] ? m[1].split(',').map((x) => m[0].replace(/\{[^}]*\}/, x)) : [m[0]]));
  assert.deepEqual(expand.sort(), FORMAT_SPECS.map((f) => f.mediaType).sort());
  for (const f of FORMATS) assert.equal(artifactLayer({ format: f, file: artifactFileName('web', '1.0', f), size: 1, sha256: 'a'.repeat(64), mediaType: formatMediaType(f) }).mediaType, FORMAT_SPECS.find((s) => s.name === f)?.mediaType);
});

test("the schema's formats, file names and kiln boot's choice come from the registry", () => {
  const schema = kilnSchema as unknown as { properties: { formats: { items: { enum: string[] } } } };
  assert.deepEqual(schema.properties.formats.items.enum, [...FORMATS]);
  assert.equal(artifactFileName('web', '0.1.0', 'gce'), 'web-0.1.0.gce.tar.gz');
  assert.deepEqual(BOOT_ORDER.map((f) => f.name), ['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx']);
  assert.equal(formatMediaType('future'), 'application/vnd.kiln.disk.future', 'a format from a newer store still gets a vendor type');
});
