import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import madge from 'madge';

// The TypeScript sources, not dist: compiled JavaScript drops type-only imports, and a cycle through
// a type (the audit's Finding once lived in the seal's types) is still a cycle in the design.
const root = join(fileURLToPath(import.meta.url), '../../../..');

test('no module in src/ imports itself through a cycle', async () => {
  const graph = await madge(join(root, 'src'), {
    fileExtensions: ['ts'],
    tsConfig: join(root, 'tsconfig.json'),
    detectiveOptions: { ts: { skipTypeImports: false } },
  });
  // A module madge cannot resolve is left out of the graph, so a cycle through it would go unseen.
  assert.deepEqual(graph.warnings().skipped, [], 'imports madge could not resolve');
  assert.ok(Object.keys(graph.obj()).length > 100, 'the graph should hold every module of src/');
  const cycles = graph.circular().map((c) => [...c, c[0]].join(' -> '));
  assert.deepEqual(cycles, [], `import cycles in src/ (break each so the dependency goes one way):\n  ${cycles.join('\n  ')}`);
});
