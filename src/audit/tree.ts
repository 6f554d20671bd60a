/**
 * auditTree: every enabled seal operation's check, plus scanners no configuration can turn off
 * (build leftovers, credential files, private keys and cloud secrets in any file). One finding
 * per path: an operation's check names it before a scanner does, and a finding for a directory
 * covers everything below it. Paths in seal.keep are not reported.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { statInTree } from '../image/tree.js';
import { enabledOperations } from '../seal/operations.js';
import { credentialFiles } from '../seal/ops/credential-files.js';
import { leftovers } from '../seal/ops/provisioner-artifacts.js';
import { sealContext } from '../seal/seal.js';
import { under } from '../seal/tree.js';
import type { Finding } from '../seal/types.js';
import { HINTS, scanText } from './patterns.js';

export interface AuditOptions {
  /** Seal operations whose checks are skipped (scanners always run). */
  disable?: readonly string[];
  /** Paths declared on purpose (kiln.yaml seal.keep). */
  keep?: readonly string[];
  logger?: Logger;
}

/** Bytes of each file the content scanners read. */
const SCAN_LIMIT = 8 * 1024 * 1024;

export async function auditTree(root: string, opts: AuditOptions = {}): Promise<Finding[]> {
  const ctx = sealContext(root, opts);
  const findings: Finding[] = [];
  const covered = (p: string) => ctx.keep.has(p) || findings.some((f) => under(p, f.path));
  const add = (f: Finding) => { if (!covered(f.path)) findings.push(f); };

  const entries = await ctx.entries();
  // Fail closed: what the audit cannot read could hold anything. These come first, so no other
  // finding can cover them.
  for (const e of entries) if (e.kind === 'unreadable') add({ check: 'unreadable', path: e.path, message: `${e.error ?? 'cannot be read'}: the audit cannot vouch for it` });
  if (!statInTree(root, '/etc')?.isDirectory()) add({ check: 'unreadable', path: '/etc', message: 'no /etc directory: this is not the root filesystem of an image, or it is damaged' });
  for (const op of enabledOperations(opts.disable)) for (const f of await op.check(root, ctx)) add(f);
  for (const l of leftovers(root, entries)) add({ check: 'build-leftover', path: l.path, message: l.why });
  for (const c of credentialFiles(root, entries)) add({ check: 'credential-file', path: c.path, message: c.why });
  let scanned = 0;
  for (const e of entries) {
    if (e.kind !== 'file' || e.size === 0 || covered(e.path)) continue;
    const head = readHead(join(root, e.path), Math.min(e.size, SCAN_LIMIT));
    if (typeof head === 'object') { add({ check: 'unreadable', path: e.path, message: `cannot read the file (${head.error}): the audit cannot vouch for it` }); continue; }
    const text = head;
    if (text === undefined) continue;
    scanned++;
    const hit = scanText(text);
    if (hit) add({ check: hit.check, path: e.path, message: hit.message });
  }
  ctx.logger.debug(`audit: ${entries.length} entries walked, ${scanned} text files scanned for secrets, ${findings.length} finding(s)`);
  return findings.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.check.localeCompare(b.check)));
}

/** The file's first bytes as latin1 text, undefined for binary files and files without any hint, or why it could not be read. */
function readHead(file: string, n: number): string | undefined | { error: string } {
  const buf = Buffer.alloc(n);
  let fd: number;
  // O_NOFOLLOW: the walk saw a regular file here; if that changed, do not read through a link.
  try { fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW); } catch (e) { return { error: (e as NodeJS.ErrnoException).code ?? String(e) }; }
  try {
    let got: number;
    try { got = readSync(fd, buf, 0, n, 0); } catch (e) { return { error: (e as NodeJS.ErrnoException).code ?? String(e) }; }
    const data = buf.subarray(0, got);
    if (data.subarray(0, 8000).includes(0)) return undefined;
    if (!HINTS.some((h) => data.includes(h))) return undefined;
    return data.toString('latin1');
  } finally {
    closeSync(fd);
  }
}

export function formatFindings(findings: readonly Finding[]): string {
  if (!findings.length) return '';
  const w = Math.max(...findings.map((f) => f.check.length));
  return findings.map((f) => `${f.check.padEnd(w)}  ${f.path}  ${f.message}`).join('\n') + '\n';
}
