import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { DOMParser, type Element } from '@xmldom/xmldom';
import { buildOvf, OVF_NS, RASD_NS, STREAM_OPTIMIZED_URI, VMW_NS, VSSD_NS, type OvfInput } from '../../src/formats/ovf.js';
import { validateOvf } from '../../src/formats/ovf-validate.js';

const input: OvfInput = {
  name: 'web', version: '1.4.0', diskFile: 'web-1.4.0.vmdk', diskFileSize: 123456789, capacity: 2147483648,
  populatedSize: 400000000, cpus: 2, memoryMiB: 2048, firmware: ['bios', 'uefi'],
};

function parse(xml: string) {
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  const all = (ns: string, local: string) => Array.from(doc.getElementsByTagNameNS(ns, local)) as Element[];
  const one = (ns: string, local: string) => {
    const found = all(ns, local);
    assert.equal(found.length, 1, `exactly one ${local}`);
    return found[0];
  };
  const ovf = (el: Element, a: string) => el.getAttributeNS(OVF_NS, a);
  const items = all(OVF_NS, 'Item').map((it) => {
    const f: Record<string, string> = {};
    for (const c of Array.from(it.getElementsByTagNameNS(RASD_NS, '*')) as Element[]) f[c.localName ?? ''] = c.textContent ?? '';
    return f;
  });
  return { doc, all, one, ovf, items };
}

test('the descriptor passes the validator', () => {
  assert.deepEqual(validateOvf(buildOvf(input)), []);
  assert.deepEqual(validateOvf(buildOvf({ ...input, firmware: ['uefi'], controller: 'VirtualSCSI', nic: 'VmxNet3', description: 'a & b' })), []);
});

test('References, DiskSection and NetworkSection carry the file size, capacity, populated size and format', () => {
  const { one, ovf, doc } = parse(buildOvf(input));
  assert.equal(doc.documentElement?.namespaceURI, OVF_NS);
  assert.equal(ovf(doc.documentElement as Element, 'version'), '1.0');
  const file = one(OVF_NS, 'File');
  assert.equal(ovf(file, 'href'), 'web-1.4.0.vmdk');
  assert.equal(ovf(file, 'size'), '123456789');
  const disk = one(OVF_NS, 'Disk');
  assert.equal(ovf(disk, 'fileRef'), ovf(file, 'id'));
  assert.equal(ovf(disk, 'capacity'), '2147483648');
  assert.equal(ovf(disk, 'capacityAllocationUnits'), 'byte');
  assert.equal(ovf(disk, 'populatedSize'), '400000000');
  assert.equal(ovf(disk, 'format'), STREAM_OPTIMIZED_URI);
  assert.equal(ovf(one(OVF_NS, 'Network'), 'name'), 'VM Network');
});

test('VirtualSystem names the product and version, and a Debian 64-bit guest', () => {
  const { one, ovf } = parse(buildOvf(input));
  assert.equal(ovf(one(OVF_NS, 'VirtualSystem'), 'id'), 'web');
  assert.equal(one(OVF_NS, 'Product').textContent, 'web');
  assert.equal(one(OVF_NS, 'Version').textContent, '1.4.0');
  assert.equal(one(OVF_NS, 'FullVersion').textContent, '1.4.0');
  const os = one(OVF_NS, 'OperatingSystemSection');
  assert.equal(ovf(os, 'id'), '96');
  assert.equal(os.getAttributeNS(VMW_NS, 'osType'), 'debian10_64Guest');
  assert.equal(one(VSSD_NS, 'VirtualSystemType').textContent, 'vmx-15');
});

test('VirtualHardwareSection: CPUs, memory in MiB, an lsilogic SCSI controller, the disk on it, an E1000 NIC', () => {
  const { items } = parse(buildOvf(input));
  const byType = (t: string) => items.filter((i) => i.ResourceType === t);
  assert.deepEqual(byType('3').map((i) => i.VirtualQuantity), ['2']);
  assert.deepEqual(byType('4').map((i) => [i.AllocationUnits, i.VirtualQuantity]), [['byte * 2^20', '2048']]);
  const [scsi] = byType('6');
  assert.equal(scsi.ResourceSubType, 'lsilogic');
  const [disk] = byType('17');
  assert.equal(disk.Parent, scsi.InstanceID);
  assert.equal(disk.HostResource, 'ovf:/disk/vmdisk1');
  assert.equal(disk.AddressOnParent, '0');
  const [nic] = byType('10');
  assert.equal(nic.ResourceSubType, 'E1000');
  assert.equal(nic.Connection, 'VM Network');
  assert.equal(new Set(items.map((i) => i.InstanceID)).size, items.length, 'InstanceIDs are unique');
});

test('firmware: efi only for UEFI-only disks, bios when the disk also boots BIOS', () => {
  const fw = (firmware: OvfInput['firmware']) => {
    const { all } = parse(buildOvf({ ...input, firmware }));
    return all(VMW_NS, 'Config').filter((c) => c.getAttributeNS(VMW_NS, 'key') === 'firmware').map((c) => c.getAttributeNS(VMW_NS, 'value'));
  };
  assert.deepEqual(fw(['uefi']), ['efi']);
  assert.deepEqual(fw(['bios', 'uefi']), ['bios']);
  assert.deepEqual(fw(['bios']), ['bios']);
});

test('text is escaped: names and descriptions with markup stay data', () => {
  const xml = buildOvf({ ...input, description: 'Tom & Jerry <b>"x"</b>', version: '1.0.0+build<1>' });
  assert.deepEqual(validateOvf(xml), []);
  const { one } = parse(xml);
  assert.equal(one(OVF_NS, 'Annotation').textContent, 'Tom & Jerry <b>"x"</b>');
  assert.equal(one(OVF_NS, 'Version').textContent, '1.0.0+build<1>');
});

// Descriptors VirtualBox or VMware reject: each mutation must be reported.
const good = buildOvf(input);
const rejects: [string, (x: string) => string, RegExp][] = [
  ['References without a file size', (x) => x.replace(/ ovf:size="\d+"/, ''), /no valid ovf:size/],
  ['a duplicate InstanceID', (x) => x.replace('<rasd:InstanceID>5</rasd:InstanceID>', '<rasd:InstanceID>4</rasd:InstanceID>'), /duplicate rasd:InstanceID 4/],
  ['a disk whose Parent is not a controller', (x) => x.replace('<rasd:Parent>3</rasd:Parent>', '<rasd:Parent>2</rasd:Parent>'), /Parent "2" is not the InstanceID of a disk controller/],
  ['a disk pointing at no Disk', (x) => x.replace('ovf:/disk/vmdisk1', 'ovf:/disk/nope'), /does not name a Disk/],
  ['a Disk whose fileRef is unknown', (x) => x.replace('ovf:fileRef="file1"', 'ovf:fileRef="file9"'), /References does not list/],
  ['memory in units VirtualBox cannot read', (x) => x.replace('byte * 2^20', 'bytes'), /AllocationUnits "bytes"/],
  ['rasd elements out of schema order', (x) => x.replace(/(<rasd:AllocationUnits>hertz \* 10\^6<\/rasd:AllocationUnits>\n)(\s+<rasd:Description>[^\n]+\n)/, '$2$1'), /out of order/],
  ['vmw:Config before the Items', (x) => x.replace(/(      <vmw:Config[^\n]+\n)/, '').replace('      <Item>', '      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>\n      <Item>'), /extension elements must follow all Items/],
  ['a NIC on an undeclared network', (x) => x.replace('<rasd:Connection>VM Network</rasd:Connection>', '<rasd:Connection>LAN</rasd:Connection>'), /Connection "LAN"/],
  ['a disk format VMware cannot import', (x) => x.replace(STREAM_OPTIMIZED_URI, 'http://example.com/qcow2'), /not a VMDK format/],
  ['an unknown required resource type', (x) => x.replace('<rasd:ResourceType>10</rasd:ResourceType>', '<rasd:ResourceType>99</rasd:ResourceType>'), /unknown ResourceType 99/],
  ['a second SCSI controller', (x) => x.replace('      <Item>\n        <rasd:AddressOnParent>0', '      <Item>\n        <rasd:ElementName>SCSI 1</rasd:ElementName>\n        <rasd:InstanceID>9</rasd:InstanceID>\n        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>\n        <rasd:ResourceType>6</rasd:ResourceType>\n      </Item>\n      <Item>\n        <rasd:AddressOnParent>0'), /more than one SCSI controller/],
  ['an Item without ElementName', (x) => x.replace('<rasd:ElementName>Hard Disk 1</rasd:ElementName>', ''), /Item has no rasd:ElementName/],
  ['a missing OperatingSystemSection id', (x) => x.replace('<OperatingSystemSection ovf:id="96"', '<OperatingSystemSection'), /numeric CIM ovf:id/],
  ['malformed XML', (x) => x.replace('</References>', ''), /XML (error|fatalError)/],
  ['the wrong namespace', (x) => x.replaceAll('http://schemas.dmtf.org/ovf/envelope/1', 'http://example.com/ovf'), /namespace/],
];
for (const [what, mutate, expect] of rejects) {
  test(`the validator rejects ${what}`, () => {
    const bad = mutate(good);
    assert.notEqual(bad, good, 'the mutation applied');
    const problems = validateOvf(bad);
    assert.ok(problems.some((p) => expect.test(p)), `expected ${expect} in ${JSON.stringify(problems)}`);
  });
}
