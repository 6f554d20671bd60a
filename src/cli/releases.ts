import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import type { ReleaseListing } from '../store/index.js';
import { parse, type Command } from './command.js';

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

type TreeRow = Pick<ReleaseListing, 'name' | 'version' | 'status' | 'reason' | 'parent'>;

/**
 * Each family of releases as an indented tree: a release without a parent in the listing is a root
 * (one whose parent is elsewhere says which), and its children follow it indented, in the listing's
 * order, so the same store always prints the same text.
 */
export function releaseTree(list: TreeRow[]): string {
  const ref = (r: TreeRow) => `${r.name}@${r.version}`;
  const listed = new Set(list.map(ref));
  const children = new Map<string, TreeRow[]>();
  for (const r of list) if (r.parent && listed.has(r.parent)) children.set(r.parent, [...(children.get(r.parent) ?? []), r]);
  const lines: string[] = [];
  const drawn = new Set<string>();
  const draw = (r: TreeRow, depth: number) => {
    // A cycle of recorded parents (a tampered store) must not loop: each release is drawn once.
    if (drawn.has(ref(r))) return;
    drawn.add(ref(r));
    const away = depth === 0 && r.parent && !listed.has(r.parent) ? ` (built on ${r.parent})` : '';
    lines.push(`${'  '.repeat(depth)}${ref(r)}  ${r.status}${r.reason ? `: ${r.reason}` : ''}${away}`);
    for (const c of children.get(ref(r)) ?? []) draw(c, depth + 1);
  };
  for (const r of list) if (!r.parent || !listed.has(r.parent)) draw(r, 0);
  // Only releases in a cycle are left: each starts a tree of its own rather than vanishing.
  for (const r of list) draw(r, 0);
  return lines.length ? lines.join('\n') + '\n' : '';
}

export const releasesCommand: Command = {
  name: 'releases',
  summary: 'List releases in the store: version, date, commit, formats, signer, parent, status (--tree: by ancestry)',
  usage: `kiln releases [name] [--json] [--tree] ${STORE_USAGE}`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...storeOptions, json: { type: 'boolean', description: 'Print the releases as JSON on stdout' }, tree: { type: 'boolean', description: 'Draw the releases as a family tree (parents and children)' } });
    const store = await storeFromFlags(values);
    const list = await store.list(positionals[0]);
    if (values.json) {
      process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      return 0;
    }
    if (!list.length) {
      process.stderr.write(`no releases${positionals[0] ? ` of ${positionals[0]}` : ''} in ${store.location}\n`);
      return 0;
    }
    if (values.tree) {
      process.stdout.write(releaseTree(list));
      return 0;
    }
    const rows = [['NAME', 'VERSION', 'DATE', 'COMMIT', 'FORMATS', 'SOURCE', 'SIGNER', 'PARENT', 'PUBLISHED', 'STATUS']];
    for (const r of list) rows.push([r.name, r.version, r.date, r.commit.slice(0, 12), r.formats.join(','), r.sourceVerified ? 'verified' : 'UNVERIFIED', r.signer, r.parent ?? '-', publishedColumn(r.cloudIds), r.status + (r.reason ? `: ${r.reason}` : '')]);
    process.stdout.write(table(rows));
    return 0;
  },
};

/** `aws:eu-west-1,us-east-1` per cloud, or `-`. */
export function publishedColumn(ids: Record<string, Record<string, string>>): string {
  const parts = Object.entries(ids).filter(([, r]) => Object.keys(r).length).sort(([a], [b]) => a.localeCompare(b)).map(([cloud, r]) => `${cloud}:${Object.keys(r).sort().join(',')}`);
  return parts.length ? parts.join(' ') : '-';
}
