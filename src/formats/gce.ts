/**
 * Google Compute Engine's import format: the disk as `disk.raw` in a gzip'd GNU oldgnu tar,
 * sparse, without ACLs, SELinux labels or xattrs (imports fail with them). Holes are found by
 * content (--hole-detection=raw) so the sparse map, and the tarball, depend only on the bytes.
 */
import { basename, dirname } from 'node:path';
import { output } from '../exec.js';
import type { Logger } from '../log.js';
import { KilnError } from '../errors.js';

export async function writeGceTarball(raw: string, dst: string, sourceDateEpoch: number, logger?: Logger): Promise<string> {
  // Each command of the pipeline gets its own parent-death signal: bash gets one from exec(), but
  // its children would outlive a Kiln killed with -9 (tar and tee kept writing into the work area).
  const k = 'setpriv --pdeathsig KILL --';
  const script = 'set -euo pipefail\n'
    + `${k} tar -C "$1" --format=oldgnu --sparse --hole-detection=raw --no-xattrs --no-acls --no-selinux `
    + '--numeric-owner --owner=0 --group=0 --mode=0644 --mtime="@$2" --transform="s|.*|disk.raw|" -cf - -- "$3" '
    + `| ${k} gzip -n -1 | ${k} tee -- "$4" | ${k} sha256sum`;
  const out = await output('bash', ['-c', script, 'kiln-gce', dirname(raw), String(Math.floor(sourceDateEpoch)), basename(raw), dst], {
    logger, hint: 'needs GNU tar and gzip',
  });
  const sha = out.split(/\s+/)[0];
  if (!/^[0-9a-f]{64}$/.test(sha)) throw new KilnError(`expected a sha256 (64 hex digits) from sha256sum, got: ${out.trim().slice(0, 200)}`, { where: { command: 'tar | gzip | sha256sum' }, hint: 'needs GNU coreutils sha256sum' });
  return sha;
}
