/** The source record of a build: what its source step verified and made, from the archive or from a vendor image. */
import type { DebianSourceRecord } from './debian.js';
import type { ImageSourceRecord } from './image.js';

export type { DebianSourceRecord, ImageSourceRecord };

export type SourceRecord = DebianSourceRecord | ImageSourceRecord;

/** The source's date: the playbook's SOURCE_DATE_EPOCH (the archive's signed Date, or the vendor tree's dpkg status). */
export function sourceDate(s: SourceRecord): number {
  return s.type === 'image' ? s.date : s.archiveDate ?? 0;
}
