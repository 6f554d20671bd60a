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
import type { TreeEntry } from '../seal/types.js';
import type { Finding } from './finding.js';
import { SecretStream, scanFile, type FileSecret } from './secrets.js';
import { InodeStreamError, type FileSink, type InodeFile } from '../image/inode-stream.js';

export interface AuditOptions {
  /** Seal operations whose checks are skipped (scanners always run). */
  disable?: readonly string[];
  /** Paths declared on purpose (kiln.yaml seal.keep): exempt from the seal's checks, not from the secret scan. */
  keep?: readonly string[];
  /** Fingerprints of secret findings accepted on purpose (kiln.yaml audit.accept). */
  accept?: readonly string[];
  /**
   * Reads many files' bytes in one pass (an image's filesystem: debugfs, src/image/inode-stream.ts)
   * where opening each through root costs a round trip per read. What it reads counts only if it
   * resolves; otherwise every file is read through root.
   */
  readFiles?: (files: readonly InodeFile[], sink: (i: number) => FileSink) => Promise<void>;
  logger?: Logger;
  /** An interrupted build's: checked between the audit's phases, so it stops instead of falling back to reading every file again. */
  signal?: AbortSignal;
}

/** A file's scan: its secrets, why it could not be read, or 'unmodified' for a packaged file as shipped. */
type Scanned = FileSecret[] | { error: string } | 'unmodified';

/** Bytes of a packaged file held while it is hashed, to scan them if the hash differs; a larger one is read again. */
const HOLD = 64 * 1024 * 1024;

/** Each file's scan, in order: through readFiles when given and it vouches for its read, else file by file through root. */
async function scanFiles(root: string, files: readonly TreeEntry[], packaged: Packaged, readFiles: AuditOptions['readFiles'], logger: Logger, signal?: AbortSignal): Promise<Scanned[]> {
  const one = (e: TreeEntry): Scanned => (packaged.unmodified(e.path) ? 'unmodified' : scanFile(join(root, e.path), e.path, e.size));
  if (!readFiles || !files.length || files.some((e) => e.ino === undefined)) return files.map(one);
  const results: (Scanned | 'again')[] = new Array(files.length);
  try {
    await readFiles(files.map((e) => ({ ino: e.ino as number, size: e.size })), (i) => {
      const e = files[i];
      const want = packaged.expected(e.path);
      if (!want) {
        const stream = new SecretStream(e.path, e.size);
        return { data: (c) => stream.push(c), end: () => { results[i] = stream.end(); } };
      }
      const hash = createHash('md5');
      const held: Buffer[] = [];
      return {
        data: (c) => { hash.update(c); if (e.size <= HOLD) held.push(c); },
        end: () => {
          if (hash.digest('hex') === want) results[i] = 'unmodified';
          else if (e.size > HOLD) results[i] = 'again';
          else { const stream = new SecretStream(e.path, e.size); for (const c of held) stream.push(c); results[i] = stream.end(); }
        },
      };
    });
  } catch (err) {
    // debugfs killed by an interrupt is not a reason to read every file again.
    signal?.throwIfAborted();
    if (!(err instanceof InodeStreamError)) throw err;
    logger.warn(`audit: ${err.message}; reading every file through the mounted view instead`);
    return files.map(one);
  }
  return results.map((r, i) => (r === 'again' ? scanFile(join(root, files[i].path), files[i].path, files[i].size) : r));
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
  const files = all.filter((e) => e.kind === 'file' && e.size > 0 && !covered(e.path));
  opts.signal?.throwIfAborted();
  const results = await scanFiles(root, files, packaged, opts.readFiles, ctx.logger, opts.signal);
  opts.signal?.throwIfAborted();
  let scanned = 0;
  let acceptedCount = 0;
  files.forEach((e, i) => {
    const found = results[i];
    // A packaged file exactly as its package shipped it is the distribution's (see packagedFiles):
    // hashing it is cheaper than scanning it, and most of an image's bytes are such files.
    if (found === 'unmodified') return;
    scanned++;
    if (!Array.isArray(found)) { add({ check: 'unreadable', path: e.path, message: `cannot read the file (${found.error}): the audit cannot vouch for it` }); return; }
    if (!found.length) return;
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
  });
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
interface Packaged {
  /** The md5 dpkg recorded for a file of the packaged trees, if any. */
  expected(p: string): string | undefined;
  /** True when the file's bytes hash to that md5. */
  unmodified(p: string): boolean;
}

function packagedFiles(root: string): Packaged {
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
  const expected = (p: string) => {
    const top = p.split('/')[1] ?? '';
    if (!SCAN_SKIP.has(top) || under(p, '/usr/local')) return undefined;
    return (sums ??= load()).get(p);
  };
  return {
    expected,
    unmodified(p) {
      const want = expected(p);
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
