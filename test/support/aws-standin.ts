/**
 * A stand-in for the AWS EC2 and EBS (direct) APIs, for Kiln's tests. It is NOT AWS.
 *
 * It is a local HTTP server on 127.0.0.1 (random port) that the real AWS SDK v3 clients (and
 * Debian's `aws` CLI) talk to through their `endpoint` setting. No emulator exists here, so it
 * enforces the APIs' rules itself:
 *
 * - every request is checked against AWS's own service models as Debian ships them (botocore
 *   JSON models, files in MODEL_FILES) plus the small explicit overlay NEWER_THAN_DEBIAN_MODEL:
 *   the operation must exist; unknown parameters, missing required members, out-of-enum values,
 *   out-of-range numbers/lengths/counts, pattern mismatches and wrongly typed values are refused
 *   (EC2: UnknownParameter / MissingParameter / InvalidParameterValue; EBS: ValidationException).
 *   EC2 wire names follow botocore's EC2Serializer (queryName, else locationName with its first
 *   letter upper-cased, else the member name; lists as Name.1, Name.2, ...). The stand-in's own
 *   responses are checked against the output shapes too;
 * - every request must carry an AWS SigV4 signature made with the stand-in's key pair; it is
 *   recomputed here (node:crypto) and compared; the credential scope gives region and service;
 * - the services' semantics Kiln relies on, per region: EBS snapshots (512 KiB blocks with
 *   SHA-256 checksums, the linear aggregate checksum, block counts, pending/completed), EC2
 *   snapshot and image registration (unique AMI names per account and region, completed owned
 *   snapshots, root device, boot mode/TPM combination, tags), copies, deletion rules and
 *   ClientToken idempotency.
 *
 * Error codes come from the EBS model's error shapes and, for EC2 (whose model lists none), from
 * the EC2 API reference's error code list. Block data is stored as content-addressed files under
 * `dir`, never in memory. Not implemented, and refused as such: the models' other operations
 * (ListChangedBlocks, most of EC2), encryption, paravirtual or S3-backed AMIs, launch permissions
 * (foreign images from addForeignImage are shared with this account; nothing is public).
 */
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { access, mkdir, open, readFile, rename, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

// ---------------------------------------------------------------------------------------------
// The models

const MODEL_FILES = {
  ebs: '/usr/lib/python3/dist-packages/botocore/data/ebs/2019-11-02/service-2.json',
  ec2: '/usr/lib/python3/dist-packages/botocore/data/ec2/2016-11-15/service-2.json',
} as const;
type Service = keyof typeof MODEL_FILES;

interface ShapeRef { shape: string; location?: string; locationName?: string; queryName?: string }
interface Shape {
  type: string; members?: Record<string, ShapeRef>; required?: string[]; member?: ShapeRef;
  key?: ShapeRef; value?: ShapeRef; enum?: string[]; min?: number; max?: number; pattern?: string;
  payload?: string; locationName?: string; queryName?: string; error?: { httpStatusCode: number };
}
interface Operation {
  name: string; http: { method: string; requestUri: string; responseCode?: number };
  input?: { shape: string }; output?: { shape: string }; errors?: { shape: string }[]; authtype?: string;
}
interface Model { metadata: { apiVersion: string; xmlNamespace?: string }; operations: Record<string, Operation>; shapes: Record<string, Shape> }

interface Overlay { members: { shape: string; member: string; ref: ShapeRef }[]; enumValues: { shape: string; value: string }[] }

/** What today's API has that Debian's models (botocore 1.29, Dec 2022) lack, and Kiln uses. Nothing else is accepted. */
export const NEWER_THAN_DEBIAN_MODEL: Record<Service, Overlay> = {
  ec2: {
    members: [
      // RegisterImage "TagSpecification.N" (TagSpecification: ResourceType + Tag.N), the shape CreateVolume uses:
      // https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RegisterImage.html
      { shape: 'RegisterImageRequest', member: 'TagSpecifications', ref: { shape: 'TagSpecificationList', locationName: 'TagSpecification' } },
    ],
    enumValues: [
      // BootMode "Valid Values: legacy-bios | uefi | uefi-preferred":
      // https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RegisterImage.html
      { shape: 'BootModeValues', value: 'uefi-preferred' },
    ],
  },
  ebs: { members: [], enumValues: [] },
};

const models = new Map<Service, Model>();

function loadModel(service: Service): Model {
  let model = models.get(service);
  if (!model) {
    model = JSON.parse(readFileSync(MODEL_FILES[service], 'utf8')) as Model;
    applyOverlay(model, NEWER_THAN_DEBIAN_MODEL[service]);
    models.set(service, model);
  }
  return model;
}

/** Fails loudly when the overlay no longer fits (e.g. Debian's model caught up): then shrink the overlay. */
function applyOverlay(model: Model, overlay: Overlay): void {
  for (const { shape, member, ref } of overlay.members) {
    const target = model.shapes[shape];
    if (!target?.members || !model.shapes[ref.shape]) throw new Error(`overlay: ${shape} or ${ref.shape} is not in the model`);
    if (target.members[member]) throw new Error(`overlay: ${shape}.${member} is already in the model`);
    target.members[member] = ref;
  }
  for (const { shape, value } of overlay.enumValues) {
    const values = model.shapes[shape]?.enum;
    if (!values || values.includes(value)) throw new Error(`overlay: enum ${shape} missing or already has ${value}`);
    values.push(value);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation of a value against a shape

type ProblemKind = 'unknown' | 'missing' | 'invalid';
interface Problem { kind: ProblemKind; path: string; message: string }

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);
const sub = (path: string, name: string): string => (path ? `${path}.${name}` : name);
const patterns = new Map<string, RegExp | null>();

function patternOf(source: string): RegExp | null {
  if (!patterns.has(source)) {
    try { patterns.set(source, new RegExp(source, 'u')); } catch { patterns.set(source, null); } // a Java-only pattern: not checked
  }
  return patterns.get(source) ?? null;
}

function checkValue(model: Model, shapeName: string, value: unknown, path: string, out: Problem[]): void {
  const shape = model.shapes[shapeName];
  const bad = (message: string): void => { out.push({ kind: 'invalid', path, message: `${path}: ${message}` }); };
  const range = (n: number, what: string): void => {
    if (shape.min !== undefined && n < shape.min) bad(`${what} ${n} is below the minimum ${shape.min}`);
    if (shape.max !== undefined && n > shape.max) bad(`${what} ${n} is above the maximum ${shape.max}`);
  };
  switch (shape.type) {
    case 'structure': return checkStructure(model, shape, value, path, out);
    case 'list':
      if (!Array.isArray(value)) return bad('must be a list');
      range(value.length, 'item count');
      value.forEach((item, i) => checkValue(model, shape.member!.shape, item, `${path}[${i}]`, out));
      return;
    case 'map':
      if (!isRecord(value)) return bad('must be a map');
      for (const [k, v] of Object.entries(value)) {
        checkValue(model, shape.key!.shape, k, `${path}{key}`, out);
        checkValue(model, shape.value!.shape, v, `${path}[${k}]`, out);
      }
      return;
    case 'string': {
      if (typeof value !== 'string') return bad('must be a string');
      if (shape.enum && !shape.enum.includes(value)) return bad(`'${value}' is not one of ${shape.enum.join(', ')}`);
      range([...value].length, 'length');
      const re = shape.pattern === undefined ? null : patternOf(shape.pattern);
      if (re && !re.test(value)) bad(`'${value}' does not match the pattern ${shape.pattern}`);
      return;
    }
    case 'integer': case 'long':
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) return bad(`${String(value)} is not an integer`);
      if (shape.type === 'integer' && (value < -(2 ** 31) || value >= 2 ** 31)) return bad(`${value} does not fit in 32 bits`);
      return range(value, 'value');
    case 'float': case 'double':
      if (typeof value !== 'number' || !Number.isFinite(value)) return bad(`${String(value)} is not a number`);
      return range(value, 'value');
    case 'boolean':
      if (typeof value !== 'boolean') bad(`${String(value)} is not true or false`);
      return;
    case 'timestamp':
      if (!(value instanceof Date) && typeof value !== 'number' && !(typeof value === 'string' && !Number.isNaN(Date.parse(value)))) bad('is not a timestamp');
      return;
    case 'blob':
      if (!(value instanceof Uint8Array) && typeof value !== 'string') bad('must be binary data');
      return;
    default: bad(`has a shape type the stand-in does not know: ${shape.type}`);
  }
}

function checkStructure(model: Model, shape: Shape, value: unknown, path: string, out: Problem[]): void {
  if (!isRecord(value)) { out.push({ kind: 'invalid', path, message: `${path || 'input'}: must be a structure` }); return; }
  const members = shape.members ?? {};
  for (const [name, v] of Object.entries(value)) {
    if (v === undefined) continue;
    const ref = members[name];
    if (!ref) out.push({ kind: 'unknown', path: sub(path, name), message: `unknown parameter ${sub(path, name)}` });
    else checkValue(model, ref.shape, v, sub(path, name), out);
  }
  for (const name of shape.required ?? []) {
    if (value[name] === undefined || value[name] === null) out.push({ kind: 'missing', path: sub(path, name), message: `missing required parameter ${sub(path, name)}` });
  }
}

function problemsFor(service: Service, operation: string, params: Record<string, unknown>): Problem[] {
  const model = loadModel(service);
  const op = model.operations[operation];
  if (!op) return [{ kind: 'unknown', path: '', message: `${operation} is not an operation of the ${service} model` }];
  const out: Problem[] = [];
  if (op.input) checkValue(model, op.input.shape, params, '', out);
  else if (Object.keys(params).length) out.push({ kind: 'unknown', path: '', message: `${operation} takes no parameters` });
  return out;
}

/** Checks `params` (model member names, JS values) against the operation's input shape in the merged model; [] when valid. */
export function validateAgainstModel(service: 'ebs' | 'ec2', operation: string, params: Record<string, unknown>): string[] {
  return problemsFor(service, operation, params).map((p) => p.message);
}

// ---------------------------------------------------------------------------------------------
// Wire decoding: EC2 query protocol and EBS rest-json, into model member names

function scalarFromWire(shape: Shape, raw: string): unknown {
  switch (shape.type) {
    case 'integer': case 'long': return /^-?\d+$/.test(raw) ? Number(raw) : raw;
    case 'float': case 'double': return raw.trim() !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    case 'boolean': return raw === 'true' ? true : raw === 'false' ? false : raw;
    default: return raw;
  }
}

/** The wire name of a member under botocore's EC2Serializer._get_serialized_name. */
function ec2WireName(model: Model, ref: ShapeRef, member: string): string {
  const target = model.shapes[ref.shape];
  const queryName = ref.queryName ?? target.queryName;
  const locationName = ref.locationName ?? target.locationName;
  if (queryName) return queryName;
  return locationName ? locationName[0].toUpperCase() + locationName.slice(1) : member;
}

interface WireNode { value?: string; children: Map<string, WireNode> }

function decodeEc2(model: Model, inputShape: string, pairs: [string, string][]): { params: Record<string, unknown>; problems: Problem[] } {
  const problems: Problem[] = [];
  const root: WireNode = { children: new Map() };
  for (const [key, value] of pairs) {
    if (key === 'Action' || key === 'Version') continue;
    let node = root;
    for (const seg of key.split('.')) {
      let child = node.children.get(seg);
      if (!child) node.children.set(seg, (child = { children: new Map() }));
      node = child;
    }
    if (node.value !== undefined) problems.push({ kind: 'invalid', path: key, message: `The parameter ${key} is given twice` });
    node.value = value;
  }
  const params = fromWire(model, inputShape, root, '', problems);
  return { params: isRecord(params) ? params : {}, problems };
}

function fromWire(model: Model, shapeName: string, node: WireNode, path: string, problems: Problem[]): unknown {
  const shape = model.shapes[shapeName];
  const unknown = (p: string): void => { problems.push({ kind: 'unknown', path: p, message: `The parameter ${p} is not recognized` }); };
  if (shape.type === 'structure') {
    if (node.value !== undefined && path) unknown(path);
    const byWire = new Map(Object.entries(shape.members ?? {}).map(([m, ref]) => [ec2WireName(model, ref, m), m]));
    const out: Record<string, unknown> = {};
    for (const [seg, child] of node.children) {
      const member = byWire.get(seg);
      if (member) out[member] = fromWire(model, shape.members![member].shape, child, sub(path, seg), problems);
      else unknown(sub(path, seg));
    }
    return out;
  }
  if (shape.type === 'list') {
    if (node.value !== undefined) unknown(path);
    const items: [number, unknown][] = [];
    for (const [seg, child] of node.children) {
      if (/^[1-9]\d*$/.test(seg)) items.push([Number(seg), fromWire(model, shape.member!.shape, child, sub(path, seg), problems)]);
      else unknown(sub(path, seg));
    }
    return items.sort((a, b) => a[0] - b[0]).map(([, v]) => v);
  }
  if (shape.type === 'map') { unknown(path); return undefined; } // no EC2 operation the stand-in serves takes a map
  for (const seg of node.children.keys()) unknown(sub(path, seg));
  return scalarFromWire(shape, node.value ?? '');
}

/** Headers the protocol and SigV4 use beside the model's own `x-amz-` members. */
const PROTOCOL_HEADERS = new Set(['x-amz-date', 'x-amz-content-sha256', 'x-amz-user-agent', 'x-amz-security-token']);

interface EbsWire { labels: Record<string, string>; query: [string, string][]; headers: IncomingHttpHeaders; body: Buffer }

function decodeEbs(model: Model, op: Operation, wire: EbsWire): { params: Record<string, unknown>; problems: Problem[] } {
  const shape = model.shapes[op.input!.shape];
  const params: Record<string, unknown> = {};
  const problems: Problem[] = [];
  const unknown = (p: string): void => { problems.push({ kind: 'unknown', path: p, message: `unknown parameter ${p}` }); };
  const byHeader = new Map<string, string>(), byQuery = new Map<string, string>(), byJson = new Map<string, string>();
  for (const [name, ref] of Object.entries(shape.members ?? {})) {
    const wireName = ref.locationName ?? name;
    if (ref.location === 'uri') params[name] = scalarFromWire(model.shapes[ref.shape], wire.labels[wireName] ?? '');
    else if (ref.location === 'header') byHeader.set(wireName.toLowerCase(), name);
    else if (ref.location === 'querystring') byQuery.set(wireName, name);
    else if (shape.payload !== name) byJson.set(wireName, name);
  }
  for (const [header, value] of Object.entries(wire.headers)) {
    const member = byHeader.get(header);
    if (member && typeof value === 'string') params[member] = scalarFromWire(model.shapes[shape.members![member].shape], value);
    else if (header.startsWith('x-amz-') && !PROTOCOL_HEADERS.has(header)) unknown(`header ${header}`);
  }
  for (const [key, value] of wire.query) {
    const member = byQuery.get(key);
    if (!member) unknown(`query ${key}`);
    else if (params[member] !== undefined) problems.push({ kind: 'invalid', path: key, message: `query ${key} is given twice` });
    else params[member] = scalarFromWire(model.shapes[shape.members![member].shape], value);
  }
  if (shape.payload) { if (wire.body.length) params[shape.payload] = wire.body; }
  else if (wire.body.length) {
    let json: unknown;
    try { json = JSON.parse(wire.body.toString('utf8')); } catch { json = undefined; }
    if (!isRecord(json)) problems.push({ kind: 'invalid', path: '', message: 'the body is not a JSON object' });
    else for (const [key, value] of Object.entries(json)) {
      const member = byJson.get(key);
      if (member) params[member] = value; else unknown(key);
    }
  }
  return { params, problems };
}

// ---------------------------------------------------------------------------------------------
// Wire encoding of outputs: EC2 XML, EBS rest-json (both driven by the output shapes)

const xmlEscape = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] ?? c);

function xmlValue(model: Model, shapeName: string, value: unknown, tag: string): string {
  const shape = model.shapes[shapeName];
  let inner: string;
  if (shape.type === 'structure') inner = xmlMembers(model, shapeName, isRecord(value) ? value : {});
  else if (shape.type === 'list') {
    const itemTag = shape.member!.locationName ?? 'member';
    inner = (Array.isArray(value) ? value : []).map((v) => xmlValue(model, shape.member!.shape, v, itemTag)).join('');
  } else inner = xmlEscape(value instanceof Date ? value.toISOString() : String(value));
  return `<${tag}>${inner}</${tag}>`;
}

function xmlMembers(model: Model, shapeName: string, value: Record<string, unknown>): string {
  return Object.entries(model.shapes[shapeName].members ?? {})
    .filter(([name]) => value[name] !== undefined)
    .map(([name, ref]) => xmlValue(model, ref.shape, value[name], ref.locationName ?? name))
    .join('');
}

function jsonValue(model: Model, shapeName: string, value: unknown): unknown {
  const shape = model.shapes[shapeName];
  if (shape.type === 'structure' && isRecord(value)) {
    const out: Record<string, unknown> = {};
    for (const [name, ref] of Object.entries(shape.members ?? {})) {
      if (value[name] !== undefined && !ref.location && shape.payload !== name) out[ref.locationName ?? name] = jsonValue(model, ref.shape, value[name]);
    }
    return out;
  }
  if (shape.type === 'list' && Array.isArray(value)) return value.map((v) => jsonValue(model, shape.member!.shape, v));
  if (shape.type === 'timestamp' && value instanceof Date) return value.getTime() / 1000; // rest-json body default: epoch seconds
  return value;
}

// ---------------------------------------------------------------------------------------------
// SigV4 (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html), recomputed and compared

class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly reason?: string) { super(message); }
}

/** Errors common to all AWS APIs (not in the service models), per protocol family. */
const AUTH_ERRORS: Record<Service, Record<'missing' | 'unknownKey' | 'badSignature' | 'expired' | 'incomplete', [number, string]>> = {
  ec2: { missing: [401, 'MissingAuthenticationToken'], unknownKey: [401, 'AuthFailure'], badSignature: [403, 'SignatureDoesNotMatch'], expired: [400, 'RequestExpired'], incomplete: [400, 'IncompleteSignature'] },
  ebs: { missing: [403, 'MissingAuthenticationTokenException'], unknownKey: [403, 'UnrecognizedClientException'], badSignature: [403, 'InvalidSignatureException'], expired: [403, 'InvalidSignatureException'], incomplete: [403, 'IncompleteSignatureException'] },
};

const sha256 = (data: string | Buffer): Buffer => createHash('sha256').update(data).digest();
const hmac = (key: string | Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();
const uriEscape = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const headerOf = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
};

interface SignedRequest { method: string; rawPath: string; query: [string, string][]; headers: IncomingHttpHeaders; body: Buffer }
interface Credentials { accessKeyId: string; secretAccessKey: string }

/** Returns the request's region (from the credential scope) when its signature is the one `creds` make. */
function verifySigV4(req: SignedRequest, creds: Credentials, service: Service, unsignedPayloadAllowed: boolean): string {
  const fail = (kind: keyof (typeof AUTH_ERRORS)['ec2'], message: string): never => {
    const [status, code] = AUTH_ERRORS[service][kind];
    throw new ApiError(status, code, message);
  };
  const auth = headerOf(req.headers, 'authorization');
  if (!auth) return fail('missing', 'Request is missing Authentication Token');
  const m = /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$/.exec(auth);
  const scope = m?.[1].split('/') ?? [];
  if (!m || scope.length !== 5 || scope[4] !== 'aws4_request') return fail('incomplete', `Authorization header is not AWS4-HMAC-SHA256 with Credential, SignedHeaders, Signature: ${auth}`);
  const [keyId, date, region, scopeService] = scope;
  if (keyId !== creds.accessKeyId) return fail('unknownKey', `The security token included in the request is invalid (unknown access key ${keyId})`);
  if (scopeService !== service) return fail('badSignature', `Credential should be scoped to correct service: '${service}'.`);
  const amzDate = headerOf(req.headers, 'x-amz-date') ?? '';
  const signedHeaders = m[2].split(';');
  if (!/^\d{8}T\d{6}Z$/.test(amzDate) || !signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date')) return fail('incomplete', 'x-amz-date and host must be present and signed');
  if (amzDate.slice(0, 8) !== date) return fail('badSignature', 'Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP');
  const t = Date.UTC(+amzDate.slice(0, 4), +amzDate.slice(4, 6) - 1, +amzDate.slice(6, 8), +amzDate.slice(9, 11), +amzDate.slice(11, 13), +amzDate.slice(13, 15));
  if (Math.abs(Date.now() - t) > 15 * 60_000) return fail('expired', `Request timestamp ${amzDate} is more than 15 minutes from the server's time`);

  const declared = headerOf(req.headers, 'x-amz-content-sha256');
  const actual = sha256(req.body).toString('hex');
  if (declared === 'UNSIGNED-PAYLOAD' && !unsignedPayloadAllowed) return fail('badSignature', 'UNSIGNED-PAYLOAD is not allowed for this operation');
  if (declared !== undefined && declared !== 'UNSIGNED-PAYLOAD' && declared !== actual) return fail('badSignature', 'The provided x-amz-content-sha256 header does not match what was computed.');
  const canonicalRequest = [
    req.method,
    req.rawPath.split('/').map(uriEscape).join('/'),
    req.query.map(([k, v]) => [uriEscape(k), uriEscape(v)]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`).join('&'),
    signedHeaders.map((h) => `${h}:${(headerOf(req.headers, h) ?? '').trim().replace(/\s+/g, ' ')}\n`).join(''),
    m[2],
    declared ?? actual,
  ].join('\n');
  const credentialScope = scope.slice(1).join('/');
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, credentialScope, sha256(canonicalRequest).toString('hex')].join('\n');
  const signingKey = ['aws4_request'].reduce((k, part) => hmac(k, part),
    [date, region, service].reduce<Buffer | string>((k, part) => hmac(k, part), `AWS4${creds.secretAccessKey}`));
  const expected = Buffer.from(hmac(signingKey, stringToSign).toString('hex'));
  if (!timingSafeEqual(expected, Buffer.from(m[3]))) {
    return fail('badSignature', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.');
  }
  return region;
}

// ---------------------------------------------------------------------------------------------
// State

const BLOCK = 524_288;
const BLOCKS_PER_GIB = 2048;
const GIB = 1024 ** 3;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

export interface StandInSnapshot {
  snapshotId: string; region: string; ownerId: string; volumeSize: number; status: 'pending' | 'completed' | 'error';
  description?: string; tags: Record<string, string>; blockCount: number; startTime: string; encrypted: boolean;
}
export interface StandInMapping { deviceName: string; snapshotId: string; volumeSize: number; deleteOnTermination: boolean; volumeType: string }
export interface StandInImage {
  imageId: string; region: string; name: string; description?: string; ownerId: string; state: 'available';
  architecture: string; bootMode?: string; enaSupport?: boolean; tpmSupport?: string; imdsSupport?: string;
  rootDeviceName: string; virtualizationType: string; blockDeviceMappings: StandInMapping[];
  tags: Record<string, string>; creationDate: string; sharedWith: string[];
}

interface BlockRef { file: string; sha256: Buffer }
interface Snapshot extends Omit<StandInSnapshot, 'blockCount'> {
  blocks: Map<number, BlockRef>; changed: Set<number>; reportPendingFor: number; timeoutAt: number; sharedWith: string[];
}
type Image = StandInImage;
interface RegionState {
  snapshots: Map<string, Snapshot>; images: Map<string, Image>;
  startTokens: Map<string, { key: string; id: string; output: Params }>; copyTokens: Map<string, { key: string; id: string }>;
}

export interface AwsStandIn {
  endpoint: string;
  accountId: string;
  /** Every authenticated request, in arrival order: params in model member names (BlockData as its size), before validation. */
  requests: { service: 'ebs' | 'ec2'; operation: string; region: string; params: Record<string, unknown> }[];
  /** Every refusal (authentication, model validation, API rules, injected failures), with the error code sent. */
  rejected: { service: string; operation: string; region: string; status: number; code: string; message: string }[];
  /** Writes snapshot `id`'s volume (VolumeSize GiB, unwritten blocks zero, a sparse file) to `file`. */
  reassemble(region: string, snapshotId: string, file: string): Promise<void>;
  images(region: string): StandInImage[];
  snapshots(region: string): StandInSnapshot[];
  /** The next `n` PutSnapshotBlock requests fail with `status` (an error the EBS model declares for it: 500 InternalServerException, 400 RequestThrottledException, ...). */
  failNextPuts(n: number, status?: number): void;
  /** Adds an available image owned by `ownerId` (another account), shared with this account, backed by a completed snapshot made from `rawFile`. Returns the ami id. */
  addForeignImage(opts: { region: string; ownerId: string; name: string; rawFile: string; bootMode?: string; architecture?: string }): Promise<string>;
  close(): Promise<void>;
}

export interface AwsStandInOptions {
  dir: string; accountId?: string; accessKeyId: string; secretAccessKey: string;
  /** How many DescribeSnapshots still report a completed snapshot as `pending` (AWS completes asynchronously). Default 1. */
  completionLag?: number;
}

type Params = Record<string, unknown>;
interface Ctx { region: string; rs: RegionState; params: Params }
type Output = Params | undefined;

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
const bool = (v: unknown): boolean | undefined => (typeof v === 'boolean' ? v : undefined);
const records = (v: unknown): Params[] => (Array.isArray(v) ? v.filter(isRecord) : []);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : []);
const hexId = (prefix: string): string => `${prefix}-${randomBytes(9).toString('hex').slice(0, 17)}`;
const tagList = (tags: Record<string, string>): Params[] => Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
const stableJson = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) =>
  isRecord(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1))) : x);
const wildcard = (pattern: string): RegExp =>
  new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 's');

const ec2Error = (code: string, message: string, status = 400): ApiError => new ApiError(status, code, message);
const ebsInvalid = (reason: string, message: string): ApiError => new ApiError(400, 'ValidationException', message, reason);
const ebsNotFound = (id: string): ApiError => new ApiError(404, 'ResourceNotFoundException', `The snapshot '${id}' does not exist.`, 'SNAPSHOT_NOT_FOUND');

/** Tag rules shared by EC2 and EBS (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions). */
function tagProblem(tags: Params[]): string | undefined {
  if (tags.length > 50) return 'at most 50 tags per resource';
  for (const { Key, Value } of tags) {
    const key = str(Key) ?? '';
    if (key.length < 1 || key.length > 128 || key.toLowerCase().startsWith('aws:')) return `invalid tag key '${key}'`;
    if ((str(Value) ?? '').length > 256) return `the value of tag ${key} is longer than 256 characters`;
  }
  return undefined;
}

function tagsOf(v: unknown): Record<string, string> {
  return Object.fromEntries(records(v).map((t) => [str(t.Key) ?? '', str(t.Value) ?? '']));
}

// ---------------------------------------------------------------------------------------------
// The server

class StandIn implements AwsStandIn {
  endpoint = '';
  readonly accountId: string;
  readonly requests: AwsStandIn['requests'] = [];
  readonly rejected: AwsStandIn['rejected'] = [];
  private readonly regions = new Map<string, RegionState>();
  private readonly tokenKey = randomBytes(32);
  private readonly server = createServer((req, res) => { this.serve(req, res).catch(() => res.destroy()); });
  private putFailures = { remaining: 0, status: 500, code: 'InternalServerException' };
  private readonly ebsRoutes: { op: Operation; method: string; re: RegExp; labels: string[]; literals: number }[];

  constructor(private readonly opts: AwsStandInOptions) {
    this.accountId = opts.accountId ?? '123456789012';
    this.ebsRoutes = Object.values(loadModel('ebs').operations).map((op) => {
      const template = op.http.requestUri.split('?')[0];
      const labels = [...template.matchAll(/\{(\w+)\+?\}/g)].map((x) => x[1]);
      const re = new RegExp(`^${template.split(/\{\w+\+?\}/).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('([^/]+)')}$`);
      return { op, method: op.http.method, re, labels, literals: template.split('/').filter((s) => s && !s.startsWith('{')).length };
    }).sort((a, b) => b.literals - a.literals);
    loadModel('ec2');
  }

  async listen(): Promise<void> {
    await mkdir(join(this.opts.dir, 'blocks'), { recursive: true });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  // --- plumbing ---

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const [rawPath, rawQuery = ''] = (req.url ?? '/').split(/\?(.*)/s);
    const service: Service = rawPath.startsWith('/snapshots') ? 'ebs' : 'ec2';
    const where = { service, operation: '', region: '' };
    try {
      const query = rawQuery.split('&').filter(Boolean).map((kv): [string, string] => {
        const [k, v = ''] = kv.split(/=(.*)/s);
        return [decodeURIComponent(k), decodeURIComponent(v)];
      });
      const signed = { method: req.method ?? 'GET', rawPath, query, headers: req.headers, body };
      const reply = service === 'ebs' ? await this.serveEbs(signed, where) : await this.serveEc2(signed, where);
      res.writeHead(reply.status, reply.headers).end(reply.body);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, service === 'ec2' ? 'InternalError' : 'InternalServerException', `stand-in failure: ${(e as Error).stack ?? String(e)}`);
      this.rejected.push({ ...where, status: err.status, code: err.code, message: err.message });
      const requestId = randomUUID();
      if (service === 'ec2') {
        res.writeHead(err.status, { 'content-type': 'text/xml;charset=UTF-8' }).end('<?xml version="1.0" encoding="UTF-8"?>\n'
          + `<Response><Errors><Error><Code>${xmlEscape(err.code)}</Code><Message>${xmlEscape(err.message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`);
      } else {
        res.writeHead(err.status, { 'content-type': 'application/json', 'x-amzn-errortype': err.code, 'x-amzn-requestid': requestId })
          .end(JSON.stringify({ Message: err.message, ...(err.reason ? { Reason: err.reason } : {}) }));
      }
    }
  }

  private regionState(region: string): RegionState {
    let rs = this.regions.get(region);
    if (!rs) this.regions.set(region, (rs = { snapshots: new Map(), images: new Map(), startTokens: new Map(), copyTokens: new Map() }));
    return rs;
  }

  private admit(service: Service, operation: string, region: string, params: Params, wireProblems: Problem[]): void {
    const data = params.BlockData;
    const recorded = data instanceof Uint8Array ? { ...params, BlockData: `<${data.length} bytes>` } : params; // not GiBs of blocks in memory
    this.requests.push({ service, operation, region, params: recorded });
    const problem = [...wireProblems, ...problemsFor(service, operation, params)][0];
    if (!problem) return;
    if (service === 'ebs') throw ebsInvalid('INVALID_PARAMETER_VALUE', problem.message);
    const code = { unknown: 'UnknownParameter', missing: 'MissingParameter', invalid: 'InvalidParameterValue' }[problem.kind];
    throw ec2Error(code, problem.message);
  }

  /** The stand-in's replies must conform to the output shapes too. */
  private checkOutput(service: Service, op: Operation, output: Output): void {
    const problems: Problem[] = [];
    if (op.output && output) checkValue(loadModel(service), op.output.shape, output, op.name, problems);
    if (problems.length) throw new Error(`the stand-in's own ${op.name} output breaks the model: ${problems.map((p) => p.message).join('; ')}`);
  }

  private async serveEbs(req: SignedRequest, where: { operation: string; region: string }): Promise<{ status: number; headers: Record<string, string>; body: Buffer | string }> {
    const model = loadModel('ebs');
    const route = this.ebsRoutes.map((r) => ({ r, m: r.method === req.method ? r.re.exec(req.rawPath) : null })).find((x) => x.m);
    if (!route?.m) throw new ApiError(404, 'UnknownOperationException', `No EBS operation for ${req.method} ${req.rawPath}`);
    const op = route.r.op;
    where.operation = op.name;
    where.region = verifySigV4(req, this.opts, 'ebs', op.authtype === 'v4-unsigned-body');
    const labels = Object.fromEntries(route.r.labels.map((l, i) => [l, decodeURIComponent(route.m![i + 1])]));
    const { params, problems } = decodeEbs(model, op, { labels, query: req.query, headers: req.headers, body: req.body });
    this.admit('ebs', op.name, where.region, params, problems);
    const handler = this.ebsHandlers[op.name];
    if (!handler) throw new ApiError(400, 'UnsupportedOperation', `Kiln's AWS stand-in does not implement ${op.name}`);
    const output = await handler({ region: where.region, rs: this.regionState(where.region), params });
    this.checkOutput('ebs', op, output);
    const shape = op.output ? model.shapes[op.output.shape] : undefined;
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-amzn-requestid': randomUUID() };
    for (const [name, ref] of Object.entries(shape?.members ?? {})) {
      if (ref.location === 'header' && output?.[name] !== undefined) headers[ref.locationName ?? name] = String(output[name]);
    }
    const payload = shape?.payload ? output?.[shape.payload] : undefined;
    if (payload instanceof Uint8Array) return { status: op.http.responseCode ?? 200, headers: { ...headers, 'content-type': 'application/octet-stream' }, body: Buffer.from(payload) };
    return { status: op.http.responseCode ?? 200, headers, body: JSON.stringify(op.output ? jsonValue(model, op.output.shape, output ?? {}) : {}) };
  }

  private async serveEc2(req: SignedRequest, where: { operation: string; region: string }): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    const model = loadModel('ec2');
    if (req.rawPath !== '/') throw ec2Error('InvalidAction', `There is no EC2 API at ${req.rawPath}`);
    const pairs: [string, string][] = req.method === 'POST' ? [...new URLSearchParams(req.body.toString('utf8'))] : req.query;
    const action = pairs.find(([k]) => k === 'Action')?.[1];
    const version = pairs.find(([k]) => k === 'Version')?.[1];
    if (!action) throw ec2Error('MissingAction', 'The request must contain the parameter Action');
    where.operation = action;
    const op = model.operations[action];
    if (!op) throw ec2Error('InvalidAction', `The action ${action} is not valid for this web service.`);
    where.region = verifySigV4(req, this.opts, 'ec2', false);
    if (version !== model.metadata.apiVersion) throw ec2Error('NoSuchVersion', `The requested version (${version ?? 'none'}) of service AmazonEC2 does not exist (the model is ${model.metadata.apiVersion})`);
    const { params, problems } = op.input ? decodeEc2(model, op.input.shape, pairs) : { params: {}, problems: [] };
    this.admit('ec2', action, where.region, params, problems);
    if (params.DryRun === true) throw ec2Error('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', 412);
    const handler = this.ec2Handlers[action];
    if (!handler) throw ec2Error('UnsupportedOperation', `Kiln's AWS stand-in does not implement ${action}`);
    const output = await handler({ region: where.region, rs: this.regionState(where.region), params });
    this.checkOutput('ec2', op, output);
    const inner = op.output ? xmlMembers(model, op.output.shape, output ?? {}) : '<return>true</return>';
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${model.metadata.xmlNamespace ?? ''}/"><requestId>${randomUUID()}</requestId>${inner}</${action}Response>`;
    return { status: 200, headers: { 'content-type': 'text/xml;charset=UTF-8' }, body };
  }

  // --- shared state helpers ---

  private refresh(s: Snapshot): Snapshot {
    if (s.status === 'pending' && Date.now() > s.timeoutAt) s.status = 'error'; // StartSnapshot's Timeout elapsed
    return s;
  }
  private visible(owned: { ownerId: string; sharedWith: string[] }): boolean {
    return owned.ownerId === this.accountId || owned.sharedWith.includes(this.accountId);
  }
  private ebsSnapshot(ctx: Ctx, own: boolean): Snapshot {
    const id = str(ctx.params.SnapshotId) ?? '';
    const s = ctx.rs.snapshots.get(id);
    if (!s || !(own ? s.ownerId === this.accountId : this.visible(s))) throw ebsNotFound(id);
    return this.refresh(s);
  }
  private readableSnapshot(ctx: Ctx): Snapshot {
    const s = this.ebsSnapshot(ctx, false);
    if (s.status !== 'completed') throw ebsInvalid('INVALID_SNAPSHOT_ID', `Snapshot ${s.snapshotId} is ${s.status}; only completed snapshots can be read`);
    return s;
  }
  private ec2Snapshot(rs: RegionState, id: string): Snapshot {
    if (!/^snap-[0-9a-f]{8}([0-9a-f]{9})?$/.test(id)) throw ec2Error('InvalidSnapshotID.Malformed', `Invalid id: "${id}" (expecting "snap-...")`);
    const s = rs.snapshots.get(id);
    if (!s || !this.visible(s)) throw ec2Error('InvalidSnapshot.NotFound', `The snapshot '${id}' does not exist.`);
    return this.refresh(s);
  }
  private ec2Image(rs: RegionState, id: string): Image {
    if (!/^ami-[0-9a-f]{8}([0-9a-f]{9})?$/.test(id)) throw ec2Error('InvalidAMIID.Malformed', `Invalid id: "${id}" (expecting "ami-...")`);
    const image = rs.images.get(id);
    if (!image || !this.visible(image)) throw ec2Error('InvalidAMIID.NotFound', `The image id '[${id}]' does not exist`);
    return image;
  }
  private blockToken(s: Snapshot, index: number): string {
    return hmac(this.tokenKey, `block:${s.snapshotId}:${index}:${s.blocks.get(index)?.sha256.toString('hex')}`).toString('base64');
  }
  private pageToken(id: string, next: number): string {
    return Buffer.from(`${id}.${next}.${hmac(this.tokenKey, `page:${id}:${next}`).toString('hex').slice(0, 16)}`).toString('base64');
  }
  private async storeBlock(data: Buffer, digest: Buffer): Promise<string> {
    const file = join(this.opts.dir, 'blocks', digest.toString('hex'));
    try { await access(file); } catch {
      const tmp = `${file}.${randomUUID()}.tmp`;
      await writeFile(tmp, data);
      await rename(tmp, file);
    }
    return file;
  }
  private checkAmiName(rs: RegionState, name: string, ownerId: string): void {
    if (!/^[A-Za-z0-9()[\] ./\-'@_]{3,128}$/.test(name)) {
      throw ec2Error('InvalidAMIName.Malformed', `AMI names must be 3-128 characters of letters, digits, ()[] ./-'@_: '${name}'`);
    }
    const taken = [...rs.images.values()].find((i) => i.name === name && i.ownerId === ownerId);
    if (taken) throw ec2Error('InvalidAMIName.Duplicate', `AMI name ${name} is already in use by AMI ${taken.imageId}`);
  }
  private newSnapshot(region: string, fields: Partial<Snapshot> & { ownerId: string; volumeSize: number }): Snapshot {
    return {
      snapshotId: hexId('snap'), region, status: 'pending', tags: {}, startTime: new Date().toISOString(), encrypted: false,
      blocks: new Map(), changed: new Set(), reportPendingFor: 0, timeoutAt: Date.now() + 60 * 60_000, sharedWith: [], ...fields,
    };
  }

  // --- EBS direct APIs ---

  private readonly ebsHandlers: Record<string, (ctx: Ctx) => Promise<Output> | Output> = {
    StartSnapshot: (ctx) => this.startSnapshot(ctx),
    PutSnapshotBlock: (ctx) => this.putSnapshotBlock(ctx),
    CompleteSnapshot: (ctx) => this.completeSnapshot(ctx),
    ListSnapshotBlocks: (ctx) => this.listSnapshotBlocks(ctx),
    GetSnapshotBlock: (ctx) => this.getSnapshotBlock(ctx),
  };

  private startOutput(s: Snapshot): Params {
    return { Description: s.description, SnapshotId: s.snapshotId, OwnerId: s.ownerId, Status: s.status, StartTime: new Date(s.startTime), VolumeSize: s.volumeSize, BlockSize: BLOCK, Tags: tagList(s.tags) };
  }

  private startSnapshot({ region, rs, params: p }: Ctx): Output {
    const volumeSize = num(p.VolumeSize) ?? 0;
    if (volumeSize > 65536) throw ebsInvalid('INVALID_VOLUME_SIZE', `VolumeSize ${volumeSize} GiB is above the maximum 65536`);
    if (p.ParentSnapshotId !== undefined && p.Encrypted !== undefined) throw ebsInvalid('INVALID_PARAMETER_VALUE', 'ParentSnapshotId and Encrypted cannot be given together');
    if (p.Encrypted === true || p.KmsKeyArn !== undefined) throw new ApiError(400, 'UnsupportedOperation', "Kiln's AWS stand-in does not implement encryption");
    const bad = tagProblem(records(p.Tags));
    if (bad) throw ebsInvalid('INVALID_TAG', bad);
    const token = str(p.ClientToken);
    const key = stableJson({ ...p, ClientToken: undefined });
    const prior = token === undefined ? undefined : rs.startTokens.get(token);
    if (prior && prior.key !== key) throw new ApiError(409, 'ConflictException', 'The request uses the same client token as a previous, but non-identical request.');
    if (prior) {
      // Idempotency replays the first answer; a snapshot deleted since is answered as it was then.
      const current = rs.snapshots.get(prior.id);
      return current ? this.startOutput(current) : prior.output;
    }
    let blocks = new Map<number, BlockRef>();
    const parentId = str(p.ParentSnapshotId);
    if (parentId) {
      const parent = this.ebsSnapshot({ region, rs, params: { SnapshotId: parentId } }, false);
      if (parent.status !== 'completed') throw ebsInvalid('INVALID_SNAPSHOT_ID', `Parent snapshot ${parentId} is not completed`);
      if (volumeSize < parent.volumeSize) throw ebsInvalid('INVALID_VOLUME_SIZE', `VolumeSize is smaller than the parent's ${parent.volumeSize} GiB`);
      blocks = new Map(parent.blocks);
    }
    const s = this.newSnapshot(region, {
      ownerId: this.accountId, volumeSize, description: str(p.Description), tags: tagsOf(p.Tags), blocks, timeoutAt: Date.now() + (num(p.Timeout) ?? 60) * 60_000,
    });
    rs.snapshots.set(s.snapshotId, s);
    const output = this.startOutput(s);
    if (token !== undefined) rs.startTokens.set(token, { key, id: s.snapshotId, output });
    return output;
  }

  private async putSnapshotBlock(ctx: Ctx): Promise<Output> {
    const p = ctx.params;
    const s = this.ebsSnapshot(ctx, true);
    if (this.putFailures.remaining > 0) {
      this.putFailures.remaining--;
      const { status, code } = this.putFailures;
      throw new ApiError(status, code, `stand-in: injected ${code} (failNextPuts)`, code === 'RequestThrottledException' ? 'ACCOUNT_THROTTLED' : undefined);
    }
    const notPending = (): ApiError => ebsInvalid('INVALID_PARAMETER_VALUE', `Snapshot ${s.snapshotId} is ${s.status}; blocks can be written only while it is pending`);
    if (s.status !== 'pending') throw notPending();
    const index = num(p.BlockIndex) ?? -1;
    if (index >= s.volumeSize * BLOCKS_PER_GIB) throw ebsInvalid('INVALID_BLOCK', `Block index ${index} is beyond the volume's ${s.volumeSize} GiB`);
    const data = p.BlockData instanceof Uint8Array ? Buffer.from(p.BlockData) : Buffer.alloc(0);
    if (p.DataLength !== BLOCK || data.length !== BLOCK) throw ebsInvalid('INVALID_PARAMETER_VALUE', `DataLength (${String(p.DataLength)}) and the body (${data.length} bytes) must both be ${BLOCK}`);
    const digest = sha256(data);
    if (digest.toString('base64') !== p.Checksum) throw ebsInvalid('INVALID_PARAMETER_VALUE', `The checksum ${String(p.Checksum)} does not match the block's SHA-256 ${digest.toString('base64')}`);
    const file = await this.storeBlock(data, digest);
    if (this.refresh(s).status !== 'pending') throw notPending();
    s.blocks.set(index, { file, sha256: digest });
    s.changed.add(index);
    return { Checksum: digest.toString('base64'), ChecksumAlgorithm: 'SHA256' };
  }

  private completeSnapshot(ctx: Ctx): Output {
    const p = ctx.params;
    const s = this.ebsSnapshot(ctx, true);
    if (s.status !== 'pending') throw ebsInvalid('INVALID_SNAPSHOT_ID', `Snapshot ${s.snapshotId} is ${s.status}, not pending`);
    if (p.ChangedBlocksCount !== s.changed.size) throw ebsInvalid('INVALID_PARAMETER_VALUE', `ChangedBlocksCount ${String(p.ChangedBlocksCount)} is not the ${s.changed.size} blocks written`);
    const hasChecksum = p.Checksum !== undefined;
    if (hasChecksum !== (p.ChecksumAlgorithm !== undefined) || hasChecksum !== (p.ChecksumAggregationMethod !== undefined)) {
      throw ebsInvalid('INVALID_PARAMETER_VALUE', 'Checksum, ChecksumAlgorithm and ChecksumAggregationMethod go together');
    }
    if (hasChecksum) {
      const digests = [...s.changed].sort((a, b) => a - b).map((i) => s.blocks.get(i)!.sha256);
      const aggregate = sha256(Buffer.concat(digests)).toString('base64');
      if (aggregate !== p.Checksum) throw ebsInvalid('INVALID_PARAMETER_VALUE', `The aggregate checksum ${String(p.Checksum)} does not match the blocks written (${aggregate})`);
    }
    s.status = 'completed';
    s.reportPendingFor = this.opts.completionLag ?? 1;
    return { Status: 'completed' };
  }

  private listSnapshotBlocks(ctx: Ctx): Output {
    const p = ctx.params;
    const s = this.readableSnapshot(ctx);
    let start = num(p.StartingBlockIndex) ?? 0;
    const pageToken = str(p.NextToken);
    if (pageToken !== undefined) {
      const [id, next] = Buffer.from(pageToken, 'base64').toString('utf8').split('.');
      if (id !== s.snapshotId || this.pageToken(id, Number(next)) !== pageToken) throw ebsInvalid('INVALID_PAGE_TOKEN', 'The page token is not valid for this snapshot');
      start = Number(next);
    }
    const max = num(p.MaxResults) ?? 10000;
    const indices = [...s.blocks.keys()].filter((i) => i >= start).sort((a, b) => a - b);
    return {
      Blocks: indices.slice(0, max).map((i) => ({ BlockIndex: i, BlockToken: this.blockToken(s, i) })),
      ExpiryTime: new Date(Date.now() + 7 * 24 * 3600_000), VolumeSize: s.volumeSize, BlockSize: BLOCK,
      NextToken: indices.length > max ? this.pageToken(s.snapshotId, indices[max]) : undefined,
    };
  }

  private async getSnapshotBlock(ctx: Ctx): Promise<Output> {
    const s = this.readableSnapshot(ctx);
    const index = num(ctx.params.BlockIndex) ?? -1;
    if (index >= s.volumeSize * BLOCKS_PER_GIB) throw ebsInvalid('INVALID_BLOCK', `Block index ${index} is beyond the volume`);
    const ref = s.blocks.get(index);
    if (!ref || ctx.params.BlockToken !== this.blockToken(s, index)) throw ebsInvalid('INVALID_BLOCK_TOKEN', `The block token is not valid for block ${index} of ${s.snapshotId}`);
    return { DataLength: BLOCK, BlockData: await readFile(ref.file), Checksum: ref.sha256.toString('base64'), ChecksumAlgorithm: 'SHA256' };
  }

  // --- EC2 ---

  private readonly ec2Handlers: Record<string, (ctx: Ctx) => Output> = {
    DescribeSnapshots: (ctx) => this.describeSnapshots(ctx),
    RegisterImage: (ctx) => this.registerImage(ctx),
    DescribeImages: (ctx) => this.describeImages(ctx),
    CreateTags: (ctx) => this.createTags(ctx),
    DeregisterImage: (ctx) => this.deregisterImage(ctx),
    DeleteSnapshot: (ctx) => this.deleteSnapshot(ctx),
    CopyImage: (ctx) => this.copyImage(ctx),
  };

  /** Keeps items matching every filter (any value, with * and ? wildcards); `fields` maps filter names to an item's values. */
  private filter<T extends { tags: Record<string, string> }>(items: T[], filters: Params[], fields: Record<string, (t: T) => unknown>): T[] {
    return filters.reduce((kept, f) => {
      const name = str(f.Name) ?? '';
      const values = strings(f.Values).map(wildcard);
      const field = name.startsWith('tag:') ? (t: T) => t.tags[name.slice(4)] : name === 'tag-key' ? (t: T) => Object.keys(t.tags) : fields[name];
      if (!field) throw ec2Error('InvalidParameterValue', `The filter '${name}' is invalid`);
      return kept.filter((t) => [field(t)].flat().some((v) => v !== undefined && values.some((re) => re.test(String(v)))));
    }, items);
  }

  private owners(values: string[]): Set<string> {
    for (const v of values) if (!/^(self|amazon|aws-marketplace|aws-backup-vault|\d{12})$/.test(v)) throw ec2Error('InvalidUserID.Malformed', `Invalid user id: '${v}'`);
    return new Set(values.map((v) => (v === 'self' ? this.accountId : v)));
  }

  private describeSnapshots({ rs, params: p }: Ctx): Output {
    const ids = strings(p.SnapshotIds);
    let items = ids.length ? ids.map((id) => this.ec2Snapshot(rs, id)) : [...rs.snapshots.values()].filter((s) => this.visible(s)).map((s) => this.refresh(s));
    const owners = strings(p.OwnerIds);
    if (owners.length) { const set = this.owners(owners); items = items.filter((s) => set.has(s.ownerId)); }
    const restorable = strings(p.RestorableByUserIds);
    if (restorable.length) { const set = this.owners(restorable); items = items.filter((s) => s.ownerId !== this.accountId && s.sharedWith.some((a) => set.has(a))); }
    items = this.filter(items, records(p.Filters), {
      'snapshot-id': (s) => s.snapshotId, status: (s) => this.reportedStatus(s, false), 'owner-id': (s) => s.ownerId,
      'volume-size': (s) => s.volumeSize, description: (s) => s.description, encrypted: (s) => s.encrypted,
    });
    const max = num(p.MaxResults);
    if (max !== undefined && (ids.length || max < 5 || max > 1000)) throw ec2Error(ids.length ? 'InvalidParameterCombination' : 'InvalidParameterValue', 'MaxResults must be 5-1000 and cannot be combined with SnapshotIds');
    const start = p.NextToken === undefined ? 0 : Number(Buffer.from(str(p.NextToken) ?? '', 'base64').toString('utf8'));
    if (!Number.isInteger(start)) throw ec2Error('InvalidParameterValue', 'Invalid NextToken');
    const page = items.slice(start, max === undefined ? undefined : start + max);
    const next = max !== undefined && start + max < items.length ? Buffer.from(String(start + max)).toString('base64') : undefined;
    return { Snapshots: page.map((s) => this.snapshotOutput(s)), NextToken: next };
  }

  /** A completed snapshot is still reported `pending` to the first `completionLag` DescribeSnapshots that show it. */
  private reportedStatus(s: Snapshot, observe: boolean): string {
    if (s.status !== 'completed' || s.reportPendingFor <= 0) return s.status;
    if (observe) s.reportPendingFor--;
    return 'pending';
  }

  private snapshotOutput(s: Snapshot): Params {
    const state = this.reportedStatus(s, true);
    return {
      SnapshotId: s.snapshotId, OwnerId: s.ownerId, VolumeId: 'vol-ffffffff', VolumeSize: s.volumeSize, State: state,
      Progress: state === 'completed' ? '100%' : s.status === 'completed' ? '99%' : '0%', StartTime: new Date(s.startTime),
      Description: s.description, Encrypted: s.encrypted, StorageTier: 'standard', Tags: tagList(s.tags),
    };
  }

  private registerImage({ region, rs, params: p }: Ctx): Output {
    if (p.ImageLocation !== undefined || p.KernelId !== undefined || p.RamdiskId !== undefined || p.BillingProducts !== undefined) {
      throw ec2Error('UnsupportedOperation', "Kiln's AWS stand-in registers EBS-backed HVM images only (no ImageLocation, KernelId, RamdiskId, BillingProducts)");
    }
    const name = str(p.Name) ?? '';
    this.checkAmiName(rs, name, this.accountId);
    if (p.VirtualizationType !== 'hvm') throw ec2Error('InvalidParameterValue', `VirtualizationType ${String(p.VirtualizationType ?? 'paravirtual (the default)')}: the stand-in registers hvm images only`);
    const bootMode = str(p.BootMode);
    if (p.TpmSupport !== undefined && bootMode !== 'uefi' && bootMode !== 'uefi-preferred') {
      throw ec2Error('InvalidParameterCombination', 'TpmSupport requires BootMode uefi or uefi-preferred');
    }
    const architecture = str(p.Architecture) ?? 'i386';
    if (architecture.startsWith('arm64') && bootMode === 'legacy-bios') throw ec2Error('InvalidParameterCombination', 'arm64 images cannot boot in legacy-bios mode');
    const mappings = records(p.BlockDeviceMappings).map((m) => this.mappingOf(rs, m));
    const root = str(p.RootDeviceName);
    if (!root) throw ec2Error('MissingParameter', 'The request must contain the parameter RootDeviceName');
    if (!mappings.some((m) => m.deviceName === root)) throw ec2Error('InvalidBlockDeviceMapping', `The root device ${root} is not among the block device mappings`);
    const specs = records(p.TagSpecifications);
    for (const spec of specs) {
      if (spec.ResourceType !== 'image' && spec.ResourceType !== 'snapshot') throw ec2Error('InvalidParameterValue', `RegisterImage cannot tag resource type ${String(spec.ResourceType)}`);
      const bad = tagProblem(records(spec.Tags));
      if (bad) throw ec2Error('InvalidParameterValue', bad);
    }
    const tagsFor = (type: string): Record<string, string> => Object.assign({}, ...specs.filter((s) => s.ResourceType === type).map((s) => tagsOf(s.Tags)));
    for (const m of mappings) Object.assign(rs.snapshots.get(m.snapshotId)!.tags, tagsFor('snapshot'));
    const image: Image = {
      imageId: hexId('ami'), region, name, description: str(p.Description), ownerId: this.accountId, state: 'available', architecture,
      bootMode, enaSupport: bool(p.EnaSupport), tpmSupport: str(p.TpmSupport), imdsSupport: str(p.ImdsSupport), rootDeviceName: root,
      virtualizationType: 'hvm', blockDeviceMappings: mappings, tags: tagsFor('image'), creationDate: new Date().toISOString(), sharedWith: [],
    };
    rs.images.set(image.imageId, image);
    return { ImageId: image.imageId };
  }

  private mappingOf(rs: RegionState, m: Params): StandInMapping {
    const ebs = isRecord(m.Ebs) ? m.Ebs : undefined;
    const deviceName = str(m.DeviceName);
    if (!deviceName || !ebs?.SnapshotId) throw ec2Error('InvalidBlockDeviceMapping', 'The stand-in needs every block device mapping to have a DeviceName and an Ebs.SnapshotId');
    const s = this.ec2Snapshot(rs, str(ebs.SnapshotId) ?? '');
    if (s.ownerId !== this.accountId) throw ec2Error('InvalidSnapshot.NotFound', `The snapshot '${s.snapshotId}' does not exist.`); // not ours (stand-in rule)
    if (s.status !== 'completed' || s.reportPendingFor > 0) throw ec2Error('IncorrectState', `Snapshot ${s.snapshotId} is in invalid state - pending`);
    const volumeSize = num(ebs.VolumeSize) ?? s.volumeSize;
    if (volumeSize < s.volumeSize) throw ec2Error('InvalidBlockDeviceMapping', `Volume of ${volumeSize} GiB is smaller than snapshot ${s.snapshotId}, expect size >= ${s.volumeSize}GiB`);
    if (ebs.Encrypted === true || ebs.KmsKeyId !== undefined) throw ec2Error('UnsupportedOperation', "Kiln's AWS stand-in does not implement encryption");
    return { deviceName, snapshotId: s.snapshotId, volumeSize, deleteOnTermination: bool(ebs.DeleteOnTermination) ?? true, volumeType: str(ebs.VolumeType) ?? 'standard' };
  }

  private imageOutput(i: Image): Params {
    return {
      ImageId: i.imageId, Name: i.name, Description: i.description, OwnerId: i.ownerId, State: i.state, Architecture: i.architecture,
      ImageType: 'machine', Public: false, Hypervisor: 'xen', RootDeviceType: 'ebs', RootDeviceName: i.rootDeviceName,
      VirtualizationType: i.virtualizationType, BootMode: i.bootMode, EnaSupport: i.enaSupport, TpmSupport: i.tpmSupport,
      ImdsSupport: i.imdsSupport, CreationDate: i.creationDate, PlatformDetails: 'Linux/UNIX', UsageOperation: 'RunInstances',
      BlockDeviceMappings: i.blockDeviceMappings.map((m) => ({
        DeviceName: m.deviceName,
        Ebs: { SnapshotId: m.snapshotId, VolumeSize: m.volumeSize, DeleteOnTermination: m.deleteOnTermination, VolumeType: m.volumeType, Encrypted: false },
      })),
      Tags: tagList(i.tags),
    };
  }

  private describeImages({ rs, params: p }: Ctx): Output {
    const ids = strings(p.ImageIds);
    let items = ids.length ? ids.map((id) => this.ec2Image(rs, id)) : [...rs.images.values()].filter((i) => this.visible(i));
    const owners = strings(p.Owners);
    if (owners.length) { const set = this.owners(owners); items = items.filter((i) => set.has(i.ownerId)); }
    const users = strings(p.ExecutableUsers);
    if (users.length) {
      const set = new Set(users.map((u) => (u === 'self' ? this.accountId : u)));
      items = items.filter((i) => i.sharedWith.some((a) => set.has(a))); // 'all' would be public images: there are none
    }
    items = this.filter(items, records(p.Filters), {
      name: (i) => i.name, 'image-id': (i) => i.imageId, state: (i) => i.state, 'owner-id': (i) => i.ownerId,
      architecture: (i) => i.architecture, description: (i) => i.description, 'is-public': () => false, 'root-device-type': () => 'ebs',
      'virtualization-type': (i) => i.virtualizationType, 'block-device-mapping.snapshot-id': (i) => i.blockDeviceMappings.map((m) => m.snapshotId),
    });
    return { Images: items.map((i) => this.imageOutput(i)) };
  }

  private createTags({ rs, params: p }: Ctx): Output {
    const tags = records(p.Tags);
    const targets = strings(p.Resources).map((id) => {
      if (id.startsWith('ami-')) return this.ec2Image(rs, id);
      if (id.startsWith('snap-')) return this.ec2Snapshot(rs, id);
      throw ec2Error('InvalidID', `The ID '${id}' is not valid (the stand-in tags images and snapshots)`);
    });
    for (const t of targets) {
      const bad = tagProblem([...tagList(t.tags).filter((x) => !tags.some((n) => n.Key === x.Key)), ...tags]);
      if (bad) throw ec2Error(bad.startsWith('at most') ? 'TagLimitExceeded' : 'InvalidParameterValue', bad);
    }
    for (const t of targets) Object.assign(t.tags, tagsOf(tags));
    return undefined;
  }

  private deregisterImage({ rs, params: p }: Ctx): Output {
    const image = this.ec2Image(rs, str(p.ImageId) ?? '');
    if (image.ownerId !== this.accountId) throw ec2Error('AuthFailure', `Not authorized for image:${image.imageId}`);
    rs.images.delete(image.imageId);
    return undefined;
  }

  /** Block files are content-addressed and may be shared; they stay until the test removes `dir`. */
  private deleteSnapshot({ rs, params: p }: Ctx): Output {
    const s = this.ec2Snapshot(rs, str(p.SnapshotId) ?? '');
    if (s.ownerId !== this.accountId) throw ec2Error('AuthFailure', `Not authorized for snapshot:${s.snapshotId}`);
    const user = [...rs.images.values()].find((i) => i.blockDeviceMappings.some((m) => m.snapshotId === s.snapshotId));
    if (user) throw ec2Error('InvalidSnapshot.InUse', `The snapshot ${s.snapshotId} is currently in use by ${user.imageId}`);
    rs.snapshots.delete(s.snapshotId);
    return undefined;
  }

  private copyImage({ region, rs, params: p }: Ctx): Output {
    if (p.Encrypted === true || p.KmsKeyId !== undefined || p.DestinationOutpostArn !== undefined) {
      throw ec2Error('UnsupportedOperation', "Kiln's AWS stand-in does not implement encrypted or Outpost copies");
    }
    const token = str(p.ClientToken);
    const key = stableJson({ ...p, ClientToken: undefined });
    const prior = token === undefined ? undefined : rs.copyTokens.get(token);
    if (prior && prior.key !== key) throw ec2Error('IdempotentParameterMismatch', 'The client token has been used with different parameters');
    if (prior) return { ImageId: prior.id };
    const sourceRegion = str(p.SourceRegion) ?? '';
    if (!/^[a-z]{2}(-[a-z]+)+-\d+$/.test(sourceRegion)) throw ec2Error('InvalidParameterValue', `Invalid region: ${sourceRegion}`);
    const source = this.ec2Image(this.regionState(sourceRegion), str(p.SourceImageId) ?? '');
    const name = str(p.Name) ?? '';
    this.checkAmiName(rs, name, this.accountId);
    const imageId = hexId('ami');
    const mappings = source.blockDeviceMappings.map((m) => {
      const from = this.regionState(sourceRegion).snapshots.get(m.snapshotId)!;
      const copy = this.newSnapshot(region, {
        ownerId: this.accountId, volumeSize: from.volumeSize, status: 'completed', blocks: new Map(from.blocks), changed: new Set(from.changed),
        description: `Copied for DestinationAmi ${imageId} from SourceAmi ${source.imageId} for SourceSnapshot ${from.snapshotId}`,
      });
      rs.snapshots.set(copy.snapshotId, copy);
      return { ...m, snapshotId: copy.snapshotId };
    });
    rs.images.set(imageId, {
      ...source, imageId, region, name, description: str(p.Description) ?? source.description, ownerId: this.accountId,
      blockDeviceMappings: mappings, tags: p.CopyImageTags === true ? { ...source.tags } : {}, creationDate: new Date().toISOString(), sharedWith: [],
    });
    if (token !== undefined) rs.copyTokens.set(token, { key, id: imageId });
    return { ImageId: imageId };
  }

  // --- test-facing API ---

  async reassemble(region: string, snapshotId: string, file: string): Promise<void> {
    const s = this.regionState(region).snapshots.get(snapshotId);
    if (!s) throw new Error(`no snapshot ${snapshotId} in ${region}`);
    const fh = await open(file, 'w');
    try {
      await fh.truncate(s.volumeSize * GIB);
      for (const [index, ref] of [...s.blocks].sort((a, b) => a[0] - b[0])) await fh.write(await readFile(ref.file), 0, BLOCK, index * BLOCK);
    } finally { await fh.close(); }
  }

  images(region: string): StandInImage[] {
    return [...this.regionState(region).images.values()].map((i) => structuredClone(i));
  }

  snapshots(region: string): StandInSnapshot[] {
    return [...this.regionState(region).snapshots.values()].map((s) => {
      const { blocks, changed: _c, reportPendingFor: _r, timeoutAt: _t, sharedWith: _s, ...view } = this.refresh(s);
      return structuredClone({ ...view, blockCount: blocks.size });
    });
  }

  failNextPuts(n: number, status = 500): void {
    const model = loadModel('ebs');
    const declared = (model.operations.PutSnapshotBlock.errors ?? []).map((e) => e.shape);
    const fitting = declared.filter((shape) => model.shapes[shape].error?.httpStatusCode === status);
    if (!fitting.length) throw new Error(`the EBS model declares no PutSnapshotBlock error with HTTP ${status} (it declares ${declared.map((s) => `${s} ${model.shapes[s].error?.httpStatusCode}`).join(', ')})`);
    this.putFailures = { remaining: n, status, code: fitting.includes('RequestThrottledException') ? 'RequestThrottledException' : fitting[0] };
  }

  async addForeignImage(o: { region: string; ownerId: string; name: string; rawFile: string; bootMode?: string; architecture?: string }): Promise<string> {
    const rs = this.regionState(o.region);
    this.checkAmiName(rs, o.name, o.ownerId);
    const fh = await open(o.rawFile, 'r');
    const blocks = new Map<number, BlockRef>();
    let size = 0;
    try {
      size = (await fh.stat()).size;
      for (let index = 0; index * BLOCK < size; index++) {
        const chunk = Buffer.alloc(BLOCK);
        await fh.read(chunk, 0, BLOCK, index * BLOCK);
        if (chunk.equals(ZERO_BLOCK)) continue;
        const digest = sha256(chunk);
        blocks.set(index, { file: await this.storeBlock(chunk, digest), sha256: digest });
      }
    } finally { await fh.close(); }
    const s = this.newSnapshot(o.region, {
      ownerId: o.ownerId, volumeSize: Math.max(1, Math.ceil(size / GIB)), status: 'completed', blocks, changed: new Set(blocks.keys()), sharedWith: [this.accountId],
    });
    rs.snapshots.set(s.snapshotId, s);
    const imageId = hexId('ami');
    rs.images.set(imageId, {
      imageId, region: o.region, name: o.name, ownerId: o.ownerId, state: 'available', architecture: o.architecture ?? 'x86_64',
      bootMode: o.bootMode ?? 'uefi', enaSupport: true, rootDeviceName: '/dev/xvda', virtualizationType: 'hvm',
      blockDeviceMappings: [{ deviceName: '/dev/xvda', snapshotId: s.snapshotId, volumeSize: s.volumeSize, deleteOnTermination: true, volumeType: 'gp3' }],
      tags: {}, creationDate: new Date().toISOString(), sharedWith: [this.accountId],
    });
    return imageId;
  }
}

export async function startAwsStandIn(opts: AwsStandInOptions): Promise<AwsStandIn> {
  const standIn = new StandIn(opts);
  await standIn.listen();
  return standIn;
}
