import { readFileSync } from 'node:fs';

/** Kiln's own version, recorded in build records and provenance. */
export const KILN_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
