/**
 * Google Compute Engine's naming rules, applied to Kiln's names (pure):
 * - resource names (images, families) match `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`;
 * - label keys `[a-z][a-z0-9_-]{0,62}`, label values `[a-z0-9_-]{0,63}`, at most 64 labels.
 * A Kiln version (release-0.1.0) is not a label value: it maps to release-0-1-0, and the exact version,
 * digest and commit are kept in the image's description, where Kiln reads them back.
 */
import { KilnError } from '../../errors.js';

export const GCE_NAME = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
export const GCE_LABEL_VALUE = /^[a-z0-9_-]{0,63}$/;

export const GCE_LABEL = { version: 'image-version', image: 'kiln-image', digest: 'kiln-digest', commit: 'kiln-commit' } as const;

/** A label value for any string: lowercased, anything outside [a-z0-9_-] a dash, at most 63 characters. */
export function labelValue(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9_-]/g, '-').slice(0, 63);
}

/** The image name of a release: `<prefix>-<version as a label>` (web + release-0.1.0 → web-release-0-1-0). */
export function gceImageName(prefix: string, version: string): string {
  const name = `${prefix}-${labelValue(version)}`.replace(/-+$/, '');
  if (!GCE_NAME.test(name)) {
    throw new KilnError(`the GCE image name ${JSON.stringify(name)} (from ${JSON.stringify(prefix)} and the version ${version}) is not a Compute Engine name: lowercase letters, digits and dashes, starting with a letter, at most 63 characters`,
      { hint: 'set publish.gce.image_prefix to a shorter lowercase name' });
  }
  return name;
}

/** What an image's description records, and its parser: the exact version and digest Kiln compares. */
export function gceDescription(r: { name: string; version: string; digest: string; commit: string }): string {
  return `${r.name}@${r.version} built by Kiln; release ${r.digest}; commit ${r.commit}`;
}

export function parseGceDescription(d: string | null | undefined): { name: string; version: string; digest: string; commit: string } | undefined {
  const m = /^(\S+)@(\S+) built by Kiln; release (sha256:[0-9a-f]{64}); commit ([0-9a-f]{7,64})$/.exec(d ?? '');
  return m ? { name: m[1], version: m[2], digest: m[3], commit: m[4] } : undefined;
}

/** The labels of a release's image. */
export function gceLabels(r: { name: string; version: string; digest: string; commit: string }): Record<string, string> {
  return {
    [GCE_LABEL.version]: labelValue(r.version),
    [GCE_LABEL.image]: labelValue(r.name),
    [GCE_LABEL.digest]: r.digest.replace(/^sha256:/, '').slice(0, 63),
    [GCE_LABEL.commit]: labelValue(r.commit),
  };
}

