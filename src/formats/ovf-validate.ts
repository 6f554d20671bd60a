/**
 * Checks an OVF descriptor for what VMware (ovftool/vSphere, schema-validating) and VirtualBox
 * (src/VBox/Main/xml/ovfreader.cpp and the importer) reject or silently misread. Returns the
 * problems found, each with its line; an empty list means the descriptor passes.
 */
import { DOMParser, type Element } from '@xmldom/xmldom';
import { OVF_NS, RASD_NS, STREAM_OPTIMIZED_URI, VMW_NS, VSSD_NS } from './ovf.js';

const OVF2_NS = 'http://schemas.dmtf.org/ovf/envelope/2';
const SECTION_ORDER_ENVELOPE = ['References'];
/** ProductSection_Type's xs:sequence after Info (DSP8023). */
const PRODUCT_ORDER = ['Info', 'Product', 'Vendor', 'Version', 'FullVersion', 'ProductUrl', 'VendorUrl', 'AppUrl', 'Icon', 'Category', 'Property'];
/** CIM_ResourceAllocationSettingData elements OVF 1.0 allows; the schema's sequence is alphabetical. */
const RASD_ELEMENTS = ['Address', 'AddressOnParent', 'AllocationUnits', 'AutomaticAllocation', 'AutomaticDeallocation', 'Caption', 'Connection',
  'ConsumerVisibility', 'Description', 'ElementName', 'HostResource', 'InstanceID', 'Limit', 'MappingBehavior', 'OtherResourceType', 'Parent',
  'PoolID', 'Reservation', 'ResourceSubType', 'ResourceType', 'VirtualQuantity', 'Weight'];
const VSSD_ELEMENTS = ['AutomaticRecoveryAction', 'AutomaticShutdownAction', 'AutomaticStartupAction', 'AutomaticStartupActionDelay',
  'AutomaticStartupActionSequenceNumber', 'Caption', 'ConfigurationDataRoot', 'ConfigurationFile', 'ConfigurationID', 'CreationTime',
  'Description', 'ElementName', 'InstanceID', 'LogDataRoot', 'Notes', 'RecoveryFile', 'SnapshotDataRoot', 'SuspendDataRoot',
  'SwapFileDataRoot', 'VirtualSystemIdentifier', 'VirtualSystemType'];
/** Resource types VirtualBox imports; any other type on an Item without ovf:required="false" fails its import. */
const KNOWN_TYPES = new Set([3, 4, 5, 6, 10, 14, 15, 17, 20, 23, 35]);
const CONTROLLER_TYPES = new Set([5, 6, 20]);
const SCSI_SUBTYPES = new Set(['lsilogic', 'buslogic', 'lsilogicsas', 'virtualscsi']);
const OTHER_STORAGE_SUBTYPES = new Set(['ahci', 'vmware.sata.ahci', 'nvme', 'vmware.nvme.controller', 'virtioscsi', 'virtio-scsi']);
/** Units VirtualBox understands for memory (anything else is an import error there). */
const MEMORY_UNITS = new Set(['byte * 2^20', 'MegaBytes', 'MB', 'byte * 2^30', 'GigaBytes', 'GB']);
const DISK_FORMATS = new Set([STREAM_OPTIMIZED_URI, 'http://www.vmware.com/specifications/vmdk.html#sparse', 'http://www.vmware.com/interfaces/specifications/vmdk.html#sparse']);

const isInt = (s: string | null | undefined): boolean => s != null && /^[0-9]+$/.test(s);

function children(el: Element, ns?: string, local?: string): Element[] {
  const out: Element[] = [];
  for (let n = el.firstChild; n; n = n.nextSibling) {
    if (n.nodeType !== 1) continue;
    const c = n as Element;
    if ((ns === undefined || c.namespaceURI === ns) && (local === undefined || c.localName === local)) out.push(c);
  }
  return out;
}

const text = (el: Element | undefined): string => (el?.textContent ?? '').trim();

export function validateOvf(xml: string): string[] {
  const problems: string[] = [];
  const at = (el: Element | null | undefined) => (el && (el as unknown as { lineNumber?: number }).lineNumber ? `line ${(el as unknown as { lineNumber: number }).lineNumber}: ` : '');
  const parseErrors: string[] = [];
  let doc;
  try {
    doc = new DOMParser({ onError: (level: string, msg: string) => { if (level !== 'warning') parseErrors.push(`XML ${level}: ${msg}`); } })
      .parseFromString(xml, 'text/xml');
  } catch (e) {
    // xmldom throws on fatal errors (e.g. mismatched tags) after reporting them.
    if (!parseErrors.length) parseErrors.push(`XML fatalError: ${(e as Error).message}`);
  }
  if (parseErrors.length || !doc) return parseErrors;
  const env = doc.documentElement;
  if (!env || env.localName !== 'Envelope') return ['root element must be Envelope'];
  if (env.namespaceURI !== OVF_NS && env.namespaceURI !== OVF2_NS) {
    return [`Envelope namespace must be ${OVF_NS} (OVF 1.x), got ${env.namespaceURI ?? 'none'}`];
  }
  const ns = env.namespaceURI;
  const attr = (el: Element, name: string) => (el.hasAttributeNS(ns, name) ? el.getAttributeNS(ns, name) : null);

  // Envelope: References, then sections, then the content.
  const top = children(env);
  if (top[0]?.localName !== SECTION_ORDER_ENVELOPE[0] || top[0].namespaceURI !== ns) problems.push(`${at(top[0])}References must be the first element of Envelope`);
  const vsIndex = top.findIndex((e) => e.localName === 'VirtualSystem');
  top.forEach((e, i) => {
    if ((e.localName ?? '').endsWith('Section') && vsIndex >= 0 && i > vsIndex) problems.push(`${at(e)}${e.localName} must come before the VirtualSystem`);
  });

  // References
  const files = new Map<string, Element>();
  for (const f of children(env, ns, 'References').flatMap((r) => children(r, ns, 'File'))) {
    const id = attr(f, 'id');
    const href = attr(f, 'href');
    const size = attr(f, 'size');
    if (!id) problems.push(`${at(f)}File without ovf:id`);
    else if (files.has(id)) problems.push(`${at(f)}duplicate File ovf:id "${id}"`);
    else files.set(id, f);
    if (!href) problems.push(`${at(f)}File "${id}" has no ovf:href`);
    else if (href.includes('/') || href.includes('\\') || href.startsWith('.')) problems.push(`${at(f)}File href "${href}" must be a plain file name inside the package`);
    if (!isInt(size)) problems.push(`${at(f)}File "${id}" has no valid ovf:size (bytes of the file in the package)`);
  }
  if (files.size === 0) problems.push('References lists no File');

  // DiskSection
  const disks = new Map<string, Element>();
  const sections = (local: string) => top.filter((e) => e.namespaceURI === ns && e.localName === local);
  for (const sec of sections('DiskSection')) {
    if (children(sec)[0]?.localName !== 'Info') problems.push(`${at(sec)}DiskSection must start with Info`);
    for (const d of children(sec, ns, 'Disk')) {
      const id = attr(d, 'diskId');
      const cap = attr(d, 'capacity');
      const units = attr(d, 'capacityAllocationUnits');
      const pop = attr(d, 'populatedSize');
      const format = attr(d, 'format');
      const fileRef = attr(d, 'fileRef');
      if (!id) problems.push(`${at(d)}Disk without ovf:diskId`);
      else if (disks.has(id)) problems.push(`${at(d)}duplicate Disk ovf:diskId "${id}"`);
      else disks.set(id, d);
      if (!isInt(cap) || cap === '0') problems.push(`${at(d)}Disk "${id}" needs a positive integer ovf:capacity`);
      if (units !== null && !/^byte( \* 2\^[0-9]+)?$/.test(units)) problems.push(`${at(d)}Disk "${id}" has unknown capacityAllocationUnits "${units}"`);
      if (pop !== null && !isInt(pop)) problems.push(`${at(d)}Disk "${id}" ovf:populatedSize is not an integer`);
      if (pop !== null && isInt(pop) && isInt(cap) && (units ?? 'byte') === 'byte' && BigInt(pop) > BigInt(cap as string)) problems.push(`${at(d)}Disk "${id}" populatedSize is larger than its capacity`);
      if (!format) problems.push(`${at(d)}Disk "${id}" has no ovf:format`);
      else if (!DISK_FORMATS.has(format)) problems.push(`${at(d)}Disk "${id}" format "${format}" is not a VMDK format VMware imports (use ${STREAM_OPTIMIZED_URI})`);
      if (fileRef === null) problems.push(`${at(d)}Disk "${id}" has no ovf:fileRef`);
      else if (!files.has(fileRef)) problems.push(`${at(d)}Disk "${id}" refers to File "${fileRef}", which References does not list`);
    }
  }
  const referenced = new Set([...disks.values()].map((d) => attr(d, 'fileRef')));
  for (const id of files.keys()) if (!referenced.has(id)) problems.push(`${at(files.get(id))}File "${id}" is not used by any Disk`);

  // NetworkSection
  const networks = new Set<string>();
  for (const sec of sections('NetworkSection')) {
    if (children(sec)[0]?.localName !== 'Info') problems.push(`${at(sec)}NetworkSection must start with Info`);
    for (const n of children(sec, ns, 'Network')) {
      const name = attr(n, 'name');
      if (!name) problems.push(`${at(n)}Network without ovf:name`);
      else if (networks.has(name)) problems.push(`${at(n)}duplicate Network "${name}"`);
      else networks.add(name);
    }
  }

  // VirtualSystem
  const systems = top.filter((e) => e.namespaceURI === ns && e.localName === 'VirtualSystem');
  if (systems.length !== 1) {
    problems.push(`expected exactly one VirtualSystem, found ${systems.length}`);
    return problems;
  }
  const vs = systems[0];
  if (!attr(vs, 'id')) problems.push(`${at(vs)}VirtualSystem has no ovf:id`);
  const vsChildren = children(vs);
  if (vsChildren[0]?.localName !== 'Info') problems.push(`${at(vs)}VirtualSystem must start with Info`);
  for (const sec of vsChildren.filter((e) => (e.localName ?? '').endsWith('Section'))) {
    if (children(sec)[0]?.localName !== 'Info') problems.push(`${at(sec)}${sec.localName} must start with Info`);
  }
  const only = (local: string) => {
    const found = children(vs, ns, local);
    if (found.length > 1) problems.push(`${at(found[1])}more than one ${local}`);
    return found[0];
  };

  const os = only('OperatingSystemSection');
  if (!os) problems.push(`${at(vs)}VirtualSystem has no OperatingSystemSection`);
  else if (!isInt(attr(os, 'id'))) problems.push(`${at(os)}OperatingSystemSection needs a numeric CIM ovf:id`);

  const product = only('ProductSection');
  if (product) {
    let last = -1;
    for (const c of children(product, ns)) {
      const i = PRODUCT_ORDER.indexOf(c.localName ?? '');
      if (i < 0) problems.push(`${at(c)}unknown element ${c.localName} in ProductSection`);
      else if (i < last) problems.push(`${at(c)}${c.localName} is out of order in ProductSection (expected ${PRODUCT_ORDER.join(', ')})`);
      else last = i;
    }
  }

  const vhs = only('VirtualHardwareSection');
  if (!vhs) {
    problems.push(`${at(vs)}VirtualSystem has no VirtualHardwareSection`);
    return problems;
  }
  const system = children(vhs, ns, 'System')[0];
  if (system) {
    checkOrder(children(system), VSSD_NS, VSSD_ELEMENTS, 'vssd', problems, at);
    if (!text(children(system, VSSD_NS, 'VirtualSystemType')[0])) problems.push(`${at(system)}System has no vssd:VirtualSystemType`);
  }
  // Items come after System; extension elements (vmw:Config) only after the Items (xs:any ##other at the end).
  let seenExtension: Element | undefined;
  const items: { el: Element; f: Map<string, string> }[] = [];
  for (const c of children(vhs)) {
    if (c.namespaceURI === ns && c.localName === 'Item') {
      if (seenExtension) problems.push(`${at(c)}Item after ${seenExtension.localName}: extension elements must follow all Items`);
      checkOrder(children(c), RASD_NS, RASD_ELEMENTS, 'rasd', problems, at);
      const f = new Map<string, string>();
      for (const r of children(c, RASD_NS)) f.set(r.localName ?? '', text(r));
      items.push({ el: c, f });
    } else if (c.namespaceURI !== ns) seenExtension ??= c;
  }
  const byId = new Map<string, { el: Element; f: Map<string, string> }>();
  for (const it of items) {
    const id = it.f.get('InstanceID');
    for (const req of ['ElementName', 'InstanceID', 'ResourceType']) {
      if (!it.f.get(req)) problems.push(`${at(it.el)}Item has no rasd:${req}`);
    }
    if (id) {
      if (byId.has(id)) problems.push(`${at(it.el)}duplicate rasd:InstanceID ${id}`);
      else byId.set(id, it);
    }
  }
  const ofType = (t: number) => items.filter((it) => Number(it.f.get('ResourceType')) === t);
  for (const it of items) {
    const t = Number(it.f.get('ResourceType'));
    if (!KNOWN_TYPES.has(t) && it.el.getAttributeNS(ns, 'required') !== 'false') problems.push(`${at(it.el)}Item of unknown ResourceType ${it.f.get('ResourceType')} must be ovf:required="false"`);
  }
  const cpus = ofType(3);
  if (cpus.length !== 1) problems.push(`${at(vhs)}expected one CPU Item (ResourceType 3), found ${cpus.length}`);
  for (const c of cpus) if (!isInt(c.f.get('VirtualQuantity')) || c.f.get('VirtualQuantity') === '0') problems.push(`${at(c.el)}CPU Item needs a positive rasd:VirtualQuantity`);
  const mem = ofType(4);
  if (mem.length !== 1) problems.push(`${at(vhs)}expected one memory Item (ResourceType 4), found ${mem.length}`);
  for (const m of mem) {
    if (!MEMORY_UNITS.has(m.f.get('AllocationUnits') ?? '')) problems.push(`${at(m.el)}memory rasd:AllocationUnits "${m.f.get('AllocationUnits') ?? ''}" is not one VirtualBox reads (use "byte * 2^20")`);
    if (!isInt(m.f.get('VirtualQuantity')) || m.f.get('VirtualQuantity') === '0') problems.push(`${at(m.el)}memory Item needs a positive rasd:VirtualQuantity`);
  }
  if (ofType(6).length > 1) problems.push(`${at(ofType(6)[1].el)}more than one SCSI controller: VirtualBox imports only one`);
  for (const c of ofType(6)) {
    const sub = (c.f.get('ResourceSubType') ?? '').toLowerCase();
    if (!SCSI_SUBTYPES.has(sub)) problems.push(`${at(c.el)}SCSI controller subtype "${c.f.get('ResourceSubType') ?? ''}" is not one of lsilogic, buslogic, lsilogicsas, VirtualSCSI`);
  }
  for (const c of ofType(20)) {
    if (!OTHER_STORAGE_SUBTYPES.has((c.f.get('ResourceSubType') ?? '').toLowerCase())) problems.push(`${at(c.el)}storage controller (type 20) subtype "${c.f.get('ResourceSubType') ?? ''}" is not AHCI, NVMe or virtio-scsi`);
  }
  const usedDisks = new Set<string>();
  for (const d of ofType(17)) {
    const host = d.f.get('HostResource') ?? '';
    const m = /^(?:ovf:\/|ovf:\/\/|\/)disk\/(.+)$/.exec(host);
    if (!m || !disks.has(m[1])) problems.push(`${at(d.el)}disk Item HostResource "${host}" does not name a Disk of the DiskSection (ovf:/disk/<diskId>)`);
    else if (usedDisks.has(m[1])) problems.push(`${at(d.el)}Disk "${m[1]}" is attached twice`);
    else usedDisks.add(m[1]);
    const parent = byId.get(d.f.get('Parent') ?? '');
    if (!parent || !CONTROLLER_TYPES.has(Number(parent.f.get('ResourceType')))) problems.push(`${at(d.el)}disk Item rasd:Parent "${d.f.get('Parent') ?? ''}" is not the InstanceID of a disk controller`);
    if (!isInt(d.f.get('AddressOnParent'))) problems.push(`${at(d.el)}disk Item needs rasd:AddressOnParent`);
  }
  for (const id of disks.keys()) if (!usedDisks.has(id)) problems.push(`${at(disks.get(id))}Disk "${id}" is not attached to any controller`);
  for (const n of ofType(10)) {
    const conn = n.f.get('Connection');
    if (!conn || !networks.has(conn)) problems.push(`${at(n.el)}ethernet Item rasd:Connection "${conn ?? ''}" is not a Network of the NetworkSection`);
  }
  for (const cfg of children(vhs, VMW_NS, 'Config')) {
    if (cfg.getAttributeNS(VMW_NS, 'key') === 'firmware' && !['efi', 'bios'].includes(cfg.getAttributeNS(VMW_NS, 'value') ?? '')) {
      problems.push(`${at(cfg)}vmw:Config firmware must be "efi" or "bios"`);
    }
  }
  return problems;
}

function checkOrder(els: Element[], ns: string, order: string[], prefix: string, problems: string[], at: (e: Element) => string): void {
  let last = -1;
  for (const e of els) {
    if (e.namespaceURI !== ns) continue;
    const i = order.indexOf(e.localName ?? '');
    if (i < 0) problems.push(`${at(e)}unknown element ${prefix}:${e.localName}`);
    else if (i <= last) problems.push(`${at(e)}${prefix}:${e.localName} is out of order or repeated (the schema's sequence is alphabetical)`);
    else last = i;
  }
}
