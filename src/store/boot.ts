import { KilnError } from '../errors.js';

/** Resolves name@version to a local disk file for `kiln boot` (wired to the release store). */
export async function resolveForBoot(ref: string, _store?: string): Promise<string> {
  throw new KilnError(`cannot resolve ${ref}: the release store is not available in this build of kiln`, { hint: 'pass the image file instead' });
}
