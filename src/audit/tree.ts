/**
 * auditTree: every enabled seal operation's check, plus scanners no configuration can turn off
 * (build leftovers, credential files, secrets in any file). An operation's check names a path
 * before a scanner does, and a finding for a directory covers everything below it. Paths in
 * seal.keep are not reported by the seal's checks, but their contents are scanned for secrets like
 * every other file: keeping a file on purpose is not shipping a secret on purpose. That takes a
 * finding's fingerprint in audit.accept.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { hostPath, statInTree } from '../image/tree.js';
import { enabledOperations } from '../seal/operations.js';
import { credentialFiles } from '../seal/ops/credential-files.js';
import { leftovers } from '../seal/ops/provisioner-artifacts.js';
import { sealContext } from '../seal/seal.js';
import { inSealScope, PSEUDO_FS, SCAN_SKIP, under, walk } from '../seal/tree.js';
import type { Finding } from '../seal/types.js';
import { scanFile } from './secrets.js';

export interface AuditOptions {
  /** Seal operations whose checks are skipped (scanners always run). */
  disable?: readonly string[];
  /** Paths declared on purpose (kiln.yaml seal.keep): exempt from the seal's checks, not from the secret scan. */
  keep?: readonly string[];
  /** Fingerprints of secret findings accepted on purpose (kiln.yaml audit.accept). */
  accept?: readonly string[];
  logger?: Logger;
}

export async function auditTree(root: string, opts: AuditOptions = {}): Promise<Finding[]> {
  const ctx = sealContext(root, opts);
  const findings: Finding[] = [];
  const covered = (p: string) => findings.some((f) => under(p, f.path));
  const add = (f: Finding) => { if (!ctx.keep.has(f.path) && !covered(f.path)) findings.push(f); };

  // One walk of everything but API filesystems; the seal's checks see their part of it.
  const all = walk(root, PSEUDO_FS, []);
  const entries = all.filter((e) => inSealScope(e.path));
  ctx.entries = async () => entries;
  // Fail closed: what the audit cannot read could hold anything. These come first, so no other
  // finding can cover them.
  for (const e of all) if (e.kind === 'unreadable') add({ check: 'unreadable', path: e.path, message: `${e.error ?? 'cannot be read'}: the audit cannot vouch for it` });
  if (!statInTree(root, '/etc')?.isDirectory()) add({ check: 'unreadable', path: '/etc', message: 'no /etc directory: this is not the root filesystem of an image, or it is damaged' });
  for (const op of enabledOperations(opts.disable)) for (const f of await op.check(root, ctx)) add(f);
  for (const l of leftovers(root, entries)) add({ check: 'build-leftover', path: l.path, message: l.why });
  for (const c of credentialFiles(root, entries)) add({ check: 'credential-file', path: c.path, message: c.why });

  const accepted = new Set(opts.accept ?? []);
  const packaged = packagedFiles(root);
  let scanned = 0;
  let acceptedCount = 0;
  for (const e of all) {
    if (e.kind !== 'file' || e.size === 0 || covered(e.path)) continue;
    // A packaged file exactly as its package shipped it is the distribution's (see packagedFiles):
    // hashing it is cheaper than scanning it, and most of an image's bytes are such files.
    if (packaged.unmodified(e.path)) continue;
    const found = scanFile(join(root, e.path), e.path, e.size);
    scanned++;
    if (!Array.isArray(found)) { add({ check: 'unreadable', path: e.path, message: `cannot read the file (${found.error}): the audit cannot vouch for it` }); continue; }
    if (!found.length) continue;
    // Python's byte-compiled cache of a packaged, unmodified module holds that module's strings
    // (cloud-init's docstrings carry example keys): a match the source has too is the source's.
    const source = pycSource(e.path);
    const fromSource = source && packaged.unmodified(source) ? scanFile(join(root, source), source, statInTree(root, source)?.size ?? 0) : [];
    const inSource = (s: { check: string; message: string }) => Array.isArray(fromSource) && fromSource.some((x) => x.check === s.check && x.message === s.message);
    for (const s of found) {
      if (inSource(s)) continue;
      if (accepted.has(s.fingerprint)) { acceptedCount++; continue; }
      findings.push({ check: s.check, path: e.path, message: s.message, fingerprint: s.fingerprint });
    }
  }
  ctx.logger.debug(`audit: ${all.length} entries walked, ${scanned} files scanned for secrets, ${acceptedCount} accepted by fingerprint, ${findings.length} finding(s)`);
  return findings.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.check.localeCompare(b.check)));
}

/** /usr/lib/x/__pycache__/m.cpython-311.pyc → /usr/lib/x/m.py (also .opt-1/.opt-2), else undefined. */
export function pycSource(p: string): string | undefined {
  const m = /^(.*)\/__pycache__\/([^/]+?)\.[a-z]+-\d+(?:\.opt-\d)?\.pyc$/.exec(p);
  return m ? `${m[1]}/${m[2]}.py` : undefined;
}

/**
 * Files of the packaged trees (/usr but /usr/local, /boot, /lib…, /bin, /sbin) whose bytes are
 * exactly what their Debian package shipped (dpkg's md5sums). A match in one is the distribution's
 * own test key or documentation example, not the build's secret; a packaged file the build changed,
 * or any unpackaged file, is reported. Hashes are computed only for files with a match.
 */
function packagedFiles(root: string): { unmodified(p: string): boolean } {
  let sums: Map<string, string> | undefined;
  const load = () => {
    const m = new Map<string, string>();
    let names: string[] = [];
    try { names = readdirSync(hostPath(root, '/var/lib/dpkg/info')).filter((n) => n.endsWith('.md5sums')); } catch { /* no dpkg database */ }
    for (const n of names) {
      let text = '';
      try { text = readFileSync(hostPath(root, `/var/lib/dpkg/info/${n}`), 'utf8'); } catch { continue; }
      for (const line of text.split('\n')) {
        const hit = /^([0-9a-f]{32}) {2}(.+)$/.exec(line);
        if (hit) m.set(`/${hit[2]}`, hit[1]);
      }
    }
    return m;
  };
  return {
    unmodified(p) {
      const top = p.split('/')[1] ?? '';
      if (!SCAN_SKIP.has(top) || under(p, '/usr/local')) return false;
      const want = (sums ??= load()).get(p);
      if (!want) return false;
      // The walk saw a regular file under real directories (it follows no link), in a tree nothing
      // else writes: joined, not resolved component by component (every lstat crosses FUSE).
      let fd: number | undefined;
      try {
        fd = openSync(join(root, p), constants.O_RDONLY | constants.O_NOFOLLOW);
        const hash = createHash('md5');
        const buf = Buffer.allocUnsafe(1 << 20);
        for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) hash.update(buf.subarray(0, n));
        return hash.digest('hex') === want;
      } catch {
        return false;
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    },
  };
}

export function formatFindings(findings: readonly Finding[]): string {
  if (!findings.length) return '';
  const w = Math.max(...findings.map((f) => f.check.length));
  return findings.map((f) => `${f.check.padEnd(w)}  ${f.path}  ${f.message}${f.fingerprint ? `  [fingerprint ${f.fingerprint}]` : ''}`).join('\n') + '\n';
}
