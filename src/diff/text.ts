/** `kiln diff`'s report for people: grouped, coloured on a terminal (NO_COLOR turns colour off). */
import { humanBytes } from '../log.js';
import { PER_RELEASE_PATHS, type DiffReport } from './index.js';

export interface Paint { add(s: string): string; del(s: string): string; chg(s: string): string; head(s: string): string; warn(s: string): string; dim(s: string): string }

export function paint(color: boolean): Paint {
  const c = (code: string) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
  return { add: c('32'), del: c('31'), chg: c('33'), head: c('1'), warn: c('1;31'), dim: c('2') };
}

const MAX_FILES = 200;

export function diffText(r: DiffReport, p: Paint, opts: { patch?: boolean } = {}): string {
  const out: string[] = [];
  const side = (s: DiffReport['a']) => `${s.label}${s.kind === 'snapshot' ? ' (snapshot build)' : ''}  commit ${s.commit.slice(0, 12)}${s.digest ? `  ${s.digest.slice(0, 19)}…` : ''}`;
  out.push(p.head(`kiln diff`), `  a: ${side(r.a)}`, `  b: ${side(r.b)}`, '');

  const pk = r.packages;
  const security = pk.changed.filter((c) => c.security);
  out.push(p.head(`Packages: ${pk.added.length} added, ${pk.removed.length} removed, ${pk.changed.length} changed (${security.length} with security fixes), ${pk.unchanged} unchanged`));
  for (const x of pk.added) out.push(p.add(`  + ${x.name} ${x.version} (${x.arch})`));
  for (const x of pk.removed) out.push(p.del(`  - ${x.name} ${x.version} (${x.arch})`));
  for (const c of pk.changed) {
    out.push(p.chg(`  ~ ${c.name} ${c.from} -> ${c.to}${c.direction === 'downgrade' ? ' (DOWNGRADE)' : ''}`) + (c.security ? ' ' + p.warn(`security: ${c.cves.join(', ') || 'security upload'}`) : ''));
    if (c.changelogMissing) out.push(p.dim(`      changelog: ${c.changelogMissing}`));
    for (const e of c.changelog ?? []) {
      out.push(`      ${e.version} (${e.distribution}, urgency ${e.urgency || '?'})${e.date ? p.dim(`  ${e.date}`) : ''}`);
      for (const l of e.changes.filter((x) => x.trim())) out.push(p.dim(`        ${l.trim()}`));
    }
  }
  out.push('');

  if (r.files) {
    const stamp = r.files.filter((f) => PER_RELEASE_PATHS.includes(f.path));
    const rest = r.files.filter((f) => !PER_RELEASE_PATHS.includes(f.path));
    const n = (k: string) => rest.filter((f) => f.change === k).length;
    out.push(p.head(`Files: ${n('added')} added, ${n('removed')} removed, ${n('changed')} changed${stamp.length ? ` (and what every release changes, the version stamp and filesystem ids: ${stamp.map((f) => f.path).join(', ')})` : ''}`));
    for (const f of rest.slice(0, MAX_FILES)) {
      const line = `  ${f.change === 'added' ? '+' : f.change === 'removed' ? '-' : '~'} ${f.path}${f.what.length ? `  (${f.what.join(', ')})` : ''}`;
      out.push(f.change === 'added' ? p.add(line) : f.change === 'removed' ? p.del(line) : p.chg(line));
    }
    if (rest.length > MAX_FILES) out.push(p.dim(`  … and ${rest.length - MAX_FILES} more (--json lists every one)`));
  } else out.push(p.head('Files: not compared'), p.dim(`  ${r.filesSkipped}`));
  out.push('');

  if (r.git) {
    out.push(p.head(`Repository: ${r.git.files.length} file(s) changed between ${r.a.commit.slice(0, 12)} and ${r.b.commit.slice(0, 12)}`));
    for (const f of r.git.files) out.push(`  ${f.status.padEnd(2)} ${f.path}  ${p.add(`+${f.added}`)} ${p.del(`-${f.removed}`)}`);
    if (opts.patch && r.git.patch) {
      for (const l of r.git.patch.trimEnd().split('\n')) out.push(l.startsWith('+') && !l.startsWith('+++') ? p.add(l) : l.startsWith('-') && !l.startsWith('---') ? p.del(l) : l.startsWith('@@') ? p.chg(l) : l);
    } else if (r.git.files.length) out.push(p.dim('  (--patch prints the changes)'));
  } else out.push(p.head('Repository: not compared'), p.dim(`  ${r.gitSkipped}`));
  out.push('');

  out.push(p.head('Seal and audit'));
  if (!r.settings.length) out.push('  kiln.yaml seal and audit settings: the same');
  for (const s of r.settings) out.push(p.chg(`  ~ ${s.key}: ${JSON.stringify(s.a)} -> ${JSON.stringify(s.b)}`));
  out.push(`  audit: ${r.audit}`, '');

  out.push(p.head('Artifacts'));
  for (const x of r.artifacts) {
    const d = x.a !== undefined && x.b !== undefined ? x.b - x.a : undefined;
    out.push(`  ${x.format.padEnd(6)} ${x.a === undefined ? '-' : humanBytes(x.a)} -> ${x.b === undefined ? '-' : humanBytes(x.b)}${d === undefined ? '' : ` (${d >= 0 ? '+' : '-'}${humanBytes(Math.abs(d))})`}`);
  }
  out.push('');
  out.push(p.head('Signed by'));
  out.push(`  a: ${r.signers.a.join(', ') || (r.a.kind === 'snapshot' ? 'not signed (a snapshot build)' : p.warn('unsigned'))}`);
  out.push(`  b: ${r.signers.b.join(', ') || (r.b.kind === 'snapshot' ? 'not signed (a snapshot build)' : p.warn('unsigned'))}`);
  if (r.signers.a.join() !== r.signers.b.join() && r.signers.a.length && r.signers.b.length) out.push(p.warn('  the signers differ'));
  return out.join('\n') + '\n';
}
