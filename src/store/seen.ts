/**
 * What this reader has already seen: the highest metadata `seq` (and its digest) per store and
 * image, so an older signed document served again is refused (TUF's rollback protection). Kept in
 * $KILN_STATE_DIR, else $XDG_STATE_HOME/kiln/metadata, else ~/.local/state/kiln/metadata. The
 * file holds no secret; losing it only loses the protection for documents older than one seen.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../fsio.js';

export interface Seen { location: string; name: string; seq: number; digest: string; time: string }

/** Kiln's own state of this user: $KILN_STATE_DIR, else $XDG_STATE_HOME/kiln, else ~/.local/state/kiln. */
export function kilnStateDir(env = process.env): string {
  return env.KILN_STATE_DIR || join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'kiln');
}

export function seenDir(env = process.env): string {
  return join(kilnStateDir(env), 'metadata');
}

function seenFile(location: string, name: string): string {
  return join(seenDir(), `${createHash('sha256').update(`${location}\0${name}`).digest('hex').slice(0, 32)}.json`);
}

export function readSeen(location: string, name: string): Seen | null {
  try {
    const s = JSON.parse(readFileSync(seenFile(location, name), 'utf8')) as Seen;
    return Number.isSafeInteger(s.seq) && typeof s.digest === 'string' ? s : null;
  } catch {
    return null;
  }
}

/** Remembers seq/digest when it is newer than what was seen. Best effort: a read-only home only loses the protection. */
export function recordSeen(location: string, name: string, seq: number, digest: string): void {
  const cur = readSeen(location, name);
  if (cur && cur.seq >= seq) return;
  try {
    mkdirSync(seenDir(), { recursive: true, mode: 0o700 });
    writeFileAtomic(seenFile(location, name), JSON.stringify({ location, name, seq, digest, time: new Date().toISOString() } satisfies Seen) + '\n');
  } catch {
    // best effort, see above
  }
}
