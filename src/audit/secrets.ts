/**
 * The secret scan of one file: the whole file, binary or not, read in chunks that overlap by more
 * than the longest secret a scanner matches, so a secret across a chunk boundary is still found.
 * Text is the file's bytes as latin1, so a secret in a binary (between NUL bytes, in a core dump,
 * a database, an executable's data) matches as it would in a text file. A cheap prefilter (one
 * pass for every scanner's hints) keeps the regular expressions off text that cannot match.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { contentScanners, distinct, MAX_KEY_SPAN, type SecretMatch } from './patterns.js';
import { ruleScanners, scanWithRule } from './rules.js';

/** Bytes read and scanned at once; files up to this size are scanned whole. */
export const CHUNK = 16 * 1024 * 1024;
/** Bytes each chunk repeats of the one before: longer than any secret a scanner matches. */
export const OVERLAP = MAX_KEY_SPAN + 64 * 1024;

/** A scanner as the driver sees it: Kiln's own, then the rule set's, in priority order. */
interface Scanner { hints: readonly string[]; window: number | 'whole'; scan(text: string, path: string): SecretMatch[] }
const scanners: Scanner[] = [
  ...contentScanners.map((c) => ({ hints: c.hints, window: c.window, scan: (t: string) => c.scan(t).map((h) => ({ check: c.name, ...h })) })),
  ...ruleScanners.map((r) => ({ hints: r.hints, window: r.window, scan: (t: string, p: string) => scanWithRule(r, t, p) })),
];
/** Each distinct hint as bytes, with the scanners it wakes. */
const hints = [...new Set(scanners.flatMap((s) => s.hints))].map((h) => ({ bytes: Buffer.from(h, 'latin1'), wakes: scanners.flatMap((s, i) => (s.hints.includes(h) ? [i] : [])) }));
/**
 * Hints by their first two bytes: one pass over the data looks each byte pair up, where a
 * Buffer.indexOf per hint (about fifty passes) or one regular expression of all hints costs
 * several times more.
 */
const firsts = new Uint8Array(256);
const pairs = new Int16Array(65536).fill(-1);
const byPair: (typeof hints)[] = [];
for (const h of hints) {
  if (h.bytes.length < 2) throw new Error(`secret scan hint '${h.bytes.toString('latin1')}' is shorter than two bytes`);
  firsts[h.bytes[0]] = 1;
  const pair = (h.bytes[0] << 8) | h.bytes[1];
  if (pairs[pair] < 0) { pairs[pair] = byPair.length; byPair.push([]); }
  byPair[pairs[pair]].push(h);
}

function hintsAt(buf: Buffer, wake: (scanner: number, at: number) => void): void {
  const n = buf.length - 1;
  for (let i = 0; i < n; i++) {
    if (firsts[buf[i]] === 0) continue;
    const at = pairs[(buf[i] << 8) | buf[i + 1]];
    if (at < 0) continue;
    for (const h of byPair[at]) {
      const b = h.bytes;
      let k = 2;
      while (k < b.length && buf[i + k] === b[k]) k++;
      if (k === b.length) for (const s of h.wakes) wake(s, i);
    }
  }
}

/** Every distinct secret in data (a file or a chunk of it, read as latin1 text); path is the image path. */
export function findSecrets(data: Buffer | string, path: string): SecretMatch[] {
  const buf = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  const at: number[][] = scanners.map(() => []);
  let any = false;
  hintsAt(buf, (s, i) => { any = true; at[s].push(i); });
  // A scanner without hints (a rule new to the preset) reads every text whole.
  if (!any && scanners.every((s) => s.hints.length)) return [];
  const text = typeof data === 'string' ? data : buf.toString('latin1');
  const out: SecretMatch[] = [];
  scanners.forEach((s, i) => {
    const spans = s.hints.length === 0 ? [[0, text.length]] : windows(at[i].sort((a, b) => a - b), text.length, s.window);
    for (const [from, to] of spans) {
      const part = from === 0 && to === text.length ? text : text.slice(from, to);
      for (const m of s.scan(part, path)) out.push({ ...m, start: m.start + from, end: m.end + from });
    }
  });
  return distinct(out);
}

/** Spans of text within `window` of a hint, merged where they touch. */
function windows(at: number[], length: number, window: number | 'whole'): [number, number][] {
  if (!at.length) return [];
  if (window === 'whole') return [[0, length]];
  const spans: [number, number][] = [];
  for (const i of at) {
    const from = Math.max(0, i - window);
    const to = Math.min(length, i + window);
    const last = spans[spans.length - 1];
    if (last && from <= last[1]) last[1] = Math.max(last[1], to);
    else spans.push([from, to]);
  }
  return spans;
}

/** A finding's stable name: the same secret in the same file under the same check, whatever else changes. */
export function fingerprint(check: string, path: string, secret: string): string {
  return createHash('sha256').update(`${check}\0${path}\0${secret}`).digest('hex').slice(0, 16);
}

export interface FileSecret extends SecretMatch { fingerprint: string }

/**
 * The scan of one file fed in pieces, in order: bytes gather into a buffer of up to CHUNK, each full
 * buffer is scanned and its last OVERLAP bytes carried into the next, so a secret across a boundary
 * is still seen whole. Fed from a file descriptor (scanFile) or a stream of an image's files
 * (src/image/inode-stream.ts).
 */
export class SecretStream {
  private readonly buf: Buffer;
  private got = 0;
  /** File offset of buf[0]. */
  private pos = 0;
  /** Bytes at the start of buf already scanned with the chunk before. */
  private carried = 0;
  private scannedOnce = false;
  private readonly found = new Map<string, FileSecret>();

  constructor(private readonly path: string, size: number) {
    this.buf = Buffer.alloc(Math.min(Math.max(size, 1), CHUNK));
  }

  /** The free part of the buffer, for a reader to fill in place; then commit(n). */
  space(): Buffer { return this.buf.subarray(this.got); }

  commit(n: number): void {
    this.got += n;
    if (this.got === this.buf.length) this.scan(true);
  }

  push(data: Buffer): void {
    for (let off = 0; off < data.length;) {
      const n = data.copy(this.buf, this.got, off);
      off += n;
      this.commit(n);
    }
  }

  /** Every distinct secret in the bytes pushed. */
  end(): FileSecret[] {
    if (this.got > this.carried || !this.scannedOnce) this.scan(false);
    // A secret near a chunk's end may be seen cut short there and whole in the next chunk: keep the longest.
    return distinct([...this.found.values()].sort((a, b) => a.start - b.start || b.end - a.end)) as FileSecret[];
  }

  private scan(full: boolean): void {
    this.scannedOnce = true;
    for (const m of findSecrets(this.buf.subarray(0, this.got), this.path)) {
      const fp = fingerprint(m.check, this.path, m.secret);
      if (!this.found.has(fp)) this.found.set(fp, { ...m, start: m.start + this.pos, end: m.end + this.pos, fingerprint: fp });
    }
    if (!full) return;
    // A buffer too small to overlap (a file that grew since the walk) goes on without one.
    const keep = this.buf.length > OVERLAP ? OVERLAP : 0;
    this.buf.copy(this.buf, 0, this.got - keep, this.got);
    this.pos += this.got - keep;
    this.got = keep;
    this.carried = keep;
  }
}

/** Every distinct secret in a host file (image path `path`), or why it could not be read. */
export function scanFile(file: string, path: string, size: number): FileSecret[] | { error: string } {
  let fd: number;
  // O_NOFOLLOW: the walk saw a regular file here; if that changed, do not read through a link.
  try { fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW); } catch (e) { return { error: (e as NodeJS.ErrnoException).code ?? String(e) }; }
  const stream = new SecretStream(path, size);
  try {
    // Read to the end (the file may have grown or shrunk since the walk).
    for (let n; (n = readSync(fd, stream.space(), 0, stream.space().length, null)) > 0;) stream.commit(n);
  } catch (e) {
    return { error: (e as NodeJS.ErrnoException).code ?? String(e) };
  } finally {
    closeSync(fd);
  }
  return stream.end();
}
