/** The source record of a build: what its source step verified and made, from the archive or from a vendor image. */
import type { DebianSourceRecord } from './debian.js';
import type { ImageSourceRecord } from './image.js';
import type { ReleaseSourceRecord } from './release.js';

export type { DebianSourceRecord, ImageSourceRecord, ReleaseSourceRecord };

export type SourceRecord = DebianSourceRecord | ImageSourceRecord | ReleaseSourceRecord;

/** The source's date: the playbook's SOURCE_DATE_EPOCH (the archive's signed Date, the vendor tree's dpkg status, or the parent release's). */
export function sourceDate(s: SourceRecord): number {
  return s.type === 'debian' ? s.archiveDate ?? 0 : s.date;
}
