/**
 * The OVF 1.0 descriptor (DMTF DSP0243 1.0) of Kiln's OVA: one VirtualSystem with one
 * streamOptimized VMDK on a SCSI controller and one NIC. Written as a template with escaping;
 * rasd/vssd elements are in the alphabetical order the CIM schemas' xs:sequence requires.
 */
export const OVF_NS = 'http://schemas.dmtf.org/ovf/envelope/1';
export const RASD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData';
export const VSSD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData';
export const VMW_NS = 'http://www.vmware.com/schema/ovf';
export const STREAM_OPTIMIZED_URI = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';
/** CIM_OperatingSystem.OsType 96 = "Debian 64-Bit" (VirtualBox maps it to Debian_64). */
export const CIM_OS_DEBIAN_64 = 96;
/** VMware guest id known to ESXi 6.7 U2+ (hardware version 15) for 64-bit Debian 10 and later. */
export const VMW_OS_TYPE = 'debian10_64Guest';
/** ESXi 6.7 U2 and later; VirtualBox ignores the value. */
export const VIRTUAL_SYSTEM_TYPE = 'vmx-15';
export const NETWORK_NAME = 'VM Network';

export type OvfScsiController = 'lsilogic' | 'VirtualSCSI';
export type OvfNic = 'E1000' | 'VmxNet3';

export interface OvfInput {
  name: string;
  version: string;
  description?: string;
  /** The VMDK member name (References href). */
  diskFile: string;
  /** Bytes of the VMDK file. */
  diskFileSize: number;
  /** Virtual disk size in bytes. */
  capacity: number;
  /** Bytes of data the disk holds (allocated grains). */
  populatedSize: number;
  cpus: number;
  memoryMiB: number;
  firmware: ('bios' | 'uefi')[];
  controller?: OvfScsiController;
  nic?: OvfNic;
}

export function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] as string)
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '');
}

/** VMware boots EFI only when told; a disk that also boots BIOS keeps the universal default. */
export function ovfFirmware(firmware: ('bios' | 'uefi')[]): 'efi' | 'bios' {
  return firmware.includes('uefi') && !firmware.includes('bios') ? 'efi' : 'bios';
}

function item(fields: [string, string | number][]): string {
  const sorted = [...fields].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `      <Item>\n${sorted.map(([k, v]) => `        <rasd:${k}>${xmlEscape(String(v))}</rasd:${k}>\n`).join('')}      </Item>\n`;
}

export function buildOvf(o: OvfInput): string {
  for (const [k, v] of [['diskFileSize', o.diskFileSize], ['capacity', o.capacity], ['populatedSize', o.populatedSize], ['cpus', o.cpus], ['memoryMiB', o.memoryMiB]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`OVF ${k} must be a non-negative integer, got ${v}`);
  }
  const e = xmlEscape;
  const controller = o.controller ?? 'lsilogic';
  const nic = o.nic ?? 'E1000';
  const hw = [
    item([['AllocationUnits', 'hertz * 10^6'], ['Description', 'Number of virtual CPUs'], ['ElementName', `${o.cpus} virtual CPU(s)`], ['InstanceID', 1], ['ResourceType', 3], ['VirtualQuantity', o.cpus]]),
    item([['AllocationUnits', 'byte * 2^20'], ['Description', 'Memory size'], ['ElementName', `${o.memoryMiB}MB of memory`], ['InstanceID', 2], ['ResourceType', 4], ['VirtualQuantity', o.memoryMiB]]),
    item([['Address', 0], ['Description', 'SCSI controller'], ['ElementName', 'SCSI Controller 0'], ['InstanceID', 3], ['ResourceSubType', controller], ['ResourceType', 6]]),
    item([['AddressOnParent', 0], ['ElementName', 'Hard Disk 1'], ['HostResource', 'ovf:/disk/vmdisk1'], ['InstanceID', 4], ['Parent', 3], ['ResourceType', 17]]),
    item([['AddressOnParent', 7], ['AutomaticAllocation', 'true'], ['Connection', NETWORK_NAME], ['Description', `${nic} ethernet adapter on "${NETWORK_NAME}"`], ['ElementName', 'Ethernet 1'], ['InstanceID', 5], ['ResourceSubType', nic], ['ResourceType', 10]]),
  ].join('');
  const annotation = o.description
    ? `    <AnnotationSection>\n      <Info>A human-readable annotation</Info>\n      <Annotation>${e(o.description)}</Annotation>\n    </AnnotationSection>\n`
    : '';
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="${OVF_NS}" xmlns:ovf="${OVF_NS}" xmlns:rasd="${RASD_NS}" xmlns:vssd="${VSSD_NS}" xmlns:vmw="${VMW_NS}">
  <References>
    <File ovf:href="${e(o.diskFile)}" ovf:id="file1" ovf:size="${o.diskFileSize}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="${o.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="${STREAM_OPTIMIZED_URI}" ovf:populatedSize="${o.populatedSize}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="${NETWORK_NAME}">
      <Description>The ${NETWORK_NAME} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${e(o.name)}">
    <Info>A virtual machine</Info>
    <Name>${e(o.name)}</Name>
    <OperatingSystemSection ovf:id="${CIM_OS_DEBIAN_64}" vmw:osType="${VMW_OS_TYPE}">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian GNU/Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${e(o.name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>${VIRTUAL_SYSTEM_TYPE}</vssd:VirtualSystemType>
      </System>
${hw}      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="${ovfFirmware(o.firmware)}"/>
    </VirtualHardwareSection>
    <ProductSection>
      <Info>Information about the installed software</Info>
      <Product>${e(o.name)}</Product>
      <Version>${e(o.version)}</Version>
      <FullVersion>${e(o.version)}</FullVersion>
    </ProductSection>
${annotation}  </VirtualSystem>
</Envelope>
`;
}
