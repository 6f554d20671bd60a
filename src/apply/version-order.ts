/**
 * Orders release versions so `kiln apply` can refuse downgrades: the numeric parts of the tag are
 * compared as numbers (release-0.10.0 > release-0.9.1); a tag without numbers is not comparable.
 */
export function versionKey(v: string): number[] | undefined {
  const nums = v.match(/\d+/g);
  return nums ? nums.map(Number) : undefined;
}

/** <0 when a is older than b, 0 when equal, >0 when newer; undefined when they cannot be compared. */
export function compareVersions(a: string, b: string): number | undefined {
  if (a === b) return 0;
  const ka = versionKey(a);
  const kb = versionKey(b);
  if (!ka || !kb) return undefined;
  for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
    const d = (ka[i] ?? 0) - (kb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
