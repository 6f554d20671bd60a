/**
 * The OVA manifest (DSP0243 §5.1): one `SHA256(<file>)= <hex>` line per file, no space before
 * "(" and exactly one after "=" (ESXi rejects other spacings).
 */
export interface ManifestEntry { name: string; sha256: string }

export function buildManifest(entries: ManifestEntry[]): string {
  return entries.map((e) => {
    if (!/^[0-9a-f]{64}$/.test(e.sha256)) throw new Error(`bad sha256 for ${e.name}`);
    if (/[()\n]/.test(e.name)) throw new Error(`bad manifest file name ${e.name}`);
    return `SHA256(${e.name})= ${e.sha256}\n`;
  }).join('');
}

/** Parses a manifest; lines that do not follow the format are returned as problems. */
export function parseManifest(text: string): { entries: ManifestEntry[]; problems: string[] } {
  const entries: ManifestEntry[] = [];
  const problems: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (line === '' && i === text.split('\n').length - 1) return;
    const m = /^SHA256\(([^()]+)\)= ([0-9a-f]{64})$/.exec(line);
    if (m) entries.push({ name: m[1], sha256: m[2] });
    else problems.push(`manifest line ${i + 1} is not "SHA256(name)= <64 hex>": ${JSON.stringify(line)}`);
  });
  return { entries, problems };
}
