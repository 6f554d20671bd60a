/**
 * The secret scan of one file: the whole file, binary or not, read in chunks that overlap by more
 * than the longest secret a scanner matches, so a secret across a chunk boundary is still found.
 * Text is the file's bytes as latin1, so a secret in a binary (between NUL bytes, in a core dump,
 * a database, an executable's data) matches as it would in a text file. A cheap prefilter (one
 * pass for every scanner's hints) keeps the regular expressions off text that cannot match.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { distinct, HINTS, MAX_KEY_SPAN, scanKiln, type SecretMatch } from './patterns.js';
import { RULE_HINT_LIST, scanWithRules } from './rules.js';

/** Bytes read and scanned at once; files up to this size are scanned whole. */
export const CHUNK = 16 * 1024 * 1024;
/** Bytes each chunk repeats of the one before: longer than any secret a scanner matches. */
export const OVERLAP = MAX_KEY_SPAN + 64 * 1024;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const anyCase = (s: string) => [...s].map((c) => (/[a-z]/.test(c) ? `[${c}${c.toUpperCase()}]` : escape(c))).join('');
/** One pass over the text for every hint of every scanner (Kiln's and the rule set's). */
const PREFILTER = new RegExp([...HINTS.map(escape), ...RULE_HINT_LIST.map((h) => (h.lower ? anyCase(h.hint) : escape(h.hint)))].join('|'));
/** True when some rule runs on any text (no hints known for it): then every text is scanned. */
const UNFILTERED = RULE_HINT_LIST.length === 0;

/** Every distinct secret in text (latin1 of a file or of a chunk); path is the image path. */
export function findSecrets(text: string, path: string): SecretMatch[] {
  if (!UNFILTERED && !PREFILTER.test(text)) return [];
  return distinct([...scanKiln(text), ...scanWithRules(text, path)]);
}

/** A finding's stable name: the same secret in the same file under the same check, whatever else changes. */
export function fingerprint(check: string, path: string, secret: string): string {
  return createHash('sha256').update(`${check}\0${path}\0${secret}`).digest('hex').slice(0, 16);
}

export interface FileSecret extends SecretMatch { fingerprint: string }

/** Every distinct secret in a host file (image path `path`), or why it could not be read. */
export function scanFile(file: string, path: string, size: number): FileSecret[] | { error: string } {
  let fd: number;
  // O_NOFOLLOW: the walk saw a regular file here; if that changed, do not read through a link.
  try { fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW); } catch (e) { return { error: (e as NodeJS.ErrnoException).code ?? String(e) }; }
  const found = new Map<string, FileSecret>();
  try {
    const buf = Buffer.alloc(Math.min(Math.max(size, 1), CHUNK));
    let pos = 0;
    for (;;) {
      let got = 0;
      try {
        // Read until the buffer is full or the file ends (it may have grown or shrunk since the walk).
        for (let n; got < buf.length && (n = readSync(fd, buf, got, buf.length - got, pos + got)) > 0;) got += n;
      } catch (e) {
        return { error: (e as NodeJS.ErrnoException).code ?? String(e) };
      }
      for (const m of findSecrets(buf.toString('latin1', 0, got), path)) {
        const fp = fingerprint(m.check, path, m.secret);
        if (!found.has(fp)) found.set(fp, { ...m, start: m.start + pos, end: m.end + pos, fingerprint: fp });
      }
      if (got < buf.length) break;
      // A file that grew since the walk, read in buffers too small to overlap, goes on without one.
      pos += buf.length > OVERLAP ? got - OVERLAP : got;
    }
  } finally {
    closeSync(fd);
  }
  // A secret near a chunk's end may be seen cut short there and whole in the next chunk: keep the longest.
  return distinct([...found.values()].sort((a, b) => a.start - b.start || b.end - a.end)) as FileSecret[];
}
