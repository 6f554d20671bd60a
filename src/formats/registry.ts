/**
 * Every artifact format Kiln writes, in one table: the schema's list, file names, the media type
 * of its layer in a release, how qemu-img reads it, whether `kiln boot` can boot it, which cloud
 * imports it, and the README's Formats table (test/unit/formats-registry.test.ts holds the README
 * to this table). Adding a format is one entry here plus its writer in ./index.ts.
 */

export interface FormatSpec {
  readonly name: string;
  /** Appended to `<name>-<version>` for the artifact's file name. */
  readonly suffix: string;
  /**
   * Media type of the artifact's layer in a release manifest. None of these formats has an IANA
   * type, so they are vendor types. Stores identify a layer's format by its `dev.kiln.format`
   * annotation, not by this, so releases written with other media types (Kiln before 0.x wrote
   * shared-mime-info types such as application/x-qemu-disk) still read.
   */
  readonly mediaType: string;
  /** qemu-img's name for the format when it is a disk qemu-img opens directly; none for archives. */
  readonly qemuImg?: 'raw' | 'qcow2' | 'vmdk' | 'vpc' | 'vhdx';
  /** Order in which `kiln boot name@version` picks a disk when no --format is given; none: not bootable. */
  readonly bootRank?: number;
  /** The cloud whose image import takes this artifact (the publish commands read this). */
  readonly cloud?: 'aws' | 'azure' | 'gce';
  /** What takes it, for people (the README's "for" column). */
  readonly for: string;
}

export const FORMAT_SPECS = [
  { name: 'raw', suffix: '.raw', mediaType: 'application/vnd.kiln.disk.raw', qemuImg: 'raw', bootRank: 2, cloud: 'aws', for: 'anything' },
  { name: 'qcow2', suffix: '.qcow2', mediaType: 'application/vnd.kiln.disk.qcow2', qemuImg: 'qcow2', bootRank: 1, for: 'KVM, OpenStack, Proxmox' },
  { name: 'vmdk', suffix: '.vmdk', mediaType: 'application/vnd.kiln.disk.vmdk', qemuImg: 'vmdk', bootRank: 3, for: 'VMware, AWS import' },
  { name: 'vhd', suffix: '.vhd', mediaType: 'application/vnd.kiln.disk.vhd', qemuImg: 'vpc', bootRank: 4, cloud: 'azure', for: 'Azure, AWS import' },
  { name: 'vhdx', suffix: '.vhdx', mediaType: 'application/vnd.kiln.disk.vhdx', qemuImg: 'vhdx', bootRank: 5, for: 'Hyper-V, AWS import-image' },
  { name: 'ova', suffix: '.ova', mediaType: 'application/vnd.kiln.ova+tar', for: 'VMware, VirtualBox' },
  { name: 'gce', suffix: '.gce.tar.gz', mediaType: 'application/vnd.kiln.disk.gce+tar+gzip', cloud: 'gce', for: 'Google Compute Engine' },
] as const satisfies readonly FormatSpec[];

export type FormatName = (typeof FORMAT_SPECS)[number]['name'];
export const FORMATS: readonly FormatName[] = FORMAT_SPECS.map((f) => f.name);

const BY_NAME = new Map<string, FormatSpec>(FORMAT_SPECS.map((f) => [f.name, f]));

/** The format's entry, or undefined for a name this version does not know (e.g. from a newer store). */
export function formatSpec(name: string): FormatSpec | undefined {
  return BY_NAME.get(name);
}

/** The media type of a format's layer; a format this version does not know gets a vendor type from its name. */
export function formatMediaType(format: string): string {
  return BY_NAME.get(format)?.mediaType ?? `application/vnd.kiln.disk.${format.replace(/[^a-z0-9.+-]/g, '')}`;
}

/** Bootable formats, best first (what `kiln boot` tries). */
export const BOOT_ORDER: readonly FormatSpec[] = FORMAT_SPECS.filter((f): f is (typeof FORMAT_SPECS)[number] & { bootRank: number } => 'bootRank' in f).sort((a, b) => a.bootRank - b.bootRank);
