/**
 * A stand-in for Azure Resource Manager's Compute Gallery API and for Microsoft Entra ID's token
 * endpoint, for Kiln's tests. It is NOT Azure, and no emulator for either exists here.
 *
 * One HTTPS server on 127.0.0.1 (random port) is both the Entra authority host and the ARM
 * endpoint. The official SDKs talk to it unchanged: `@azure/identity` (EnvironmentCredential /
 * ClientSecretCredential through MSAL, `disableInstanceDiscovery: true`) and `@azure/arm-compute`
 * (`ComputeManagementClient`, option `endpoint`). Azure's JS core refuses bearer tokens over plain
 * http, so the server uses a self-signed certificate made at start with `openssl` (`caFile`): trust
 * it with `NODE_EXTRA_CA_CERTS=<caFile>` in a child process (Node reads it only at start-up), or
 * in-process with the pipeline option `agent: new https.Agent({ ca })` on both the credential and
 * the client.
 *
 * Entra (one tenant, one app registration, one secret — UUIDs and secret made at start):
 * - GET /{tenant}/v2.0/.well-known/openid-configuration, endpoints on this host; unknown tenant:
 *   400 invalid_tenant (AADSTS90002). The credential must set `disableInstanceDiscovery: true`:
 *   otherwise MSAL asks login.microsoftonline.com (not this host) to vouch for the authority and
 *   fails with endpoints_resolution_error (a /common/discovery/instance request here gets 404).
 * - POST /{tenant}/oauth2/v2.0/token, client_credentials only (AADSTS70003), client id
 *   (AADSTS700016), one `<resource>/.default` scope (AADSTS1002012) for ARM (AADSTS500011),
 *   client secret (401 invalid_client, AADSTS7000215). Tokens are HS256 JWTs signed with a random
 *   key, remembered with their expiry (expires_in 3599); only ARM tokens are ever issued.
 *
 * ARM (one subscription and one resource group, given at start), API versions 2022-03-03 and later:
 * - every request needs `Authorization: Bearer <token issued here for ARM, unexpired>` (401
 *   AuthenticationFailed without/malformed header; InvalidAuthenticationToken or
 *   ExpiredAuthenticationToken otherwise) and `api-version` (400 MissingApiVersionParameter /
 *   NoRegisteredProviderFound); other subscription: 404 SubscriptionNotFound; other resource group:
 *   404 ResourceGroupNotFound;
 * - galleries (GET, list, PUT), image definitions (GET, list, PUT), image versions (GET with
 *   `$expand=ReplicationStatus`, list, PUT, DELETE) under
 *   /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{g}/images/{i}/versions/{v},
 *   names case-insensitive as in ARM, name rules (gallery: alphanumerics with `_`/`.` inside, no
 *   dashes; image: also `-`; version: Major(int32).Minor(int32).Patch(int32)), missing parent: 404
 *   ParentResourceNotFound, missing resource: 404 ResourceNotFound;
 * - locations must be Azure public regions from REGIONS, normalised ("West Europe" → westeurope);
 *   children must be in their gallery's location; responses name target regions by display name,
 *   as Azure does;
 * - image definitions: osType, osState, identifier {publisher, offer, sku} required and the
 *   identifier unique in the gallery (409 Conflict); hyperVGeneration V1/V2 (default V1),
 *   architecture x64/Arm64 (Arm64 needs V2), features SecurityType (non-Standard needs V2),
 *   IsAcceleratedNetworkSupported, DiskControllerTypes, IsHibernateSupported; osType, osState,
 *   hyperVGeneration, architecture and identifier cannot change (400 PropertyChangeNotAllowed),
 *   features only with allowUpdateImage;
 * - image versions: only a VHD page-blob source (`storageProfile.osDiskImage.source.uri` +
 *   `storageAccountId`, or `id` for the account): the uri must end in `.vhd`, lie in that storage
 *   account (host `<account>.blob.…` or path-style `/<account>/…` as Azurite), exist according to
 *   the `sourceExists` callback, and be `N MiB + 512` bytes (a fixed VHD of whole MiB), else 400
 *   InvalidParameter; changing the source of an existing version: 409 Conflict; target regions
 *   must include the version's own location, no duplicates, replica count 1–100, storage account
 *   types Standard_LRS/Standard_ZRS/Premium_LRS/PremiumV2_LRS; tags: ≤ 50, string values;
 * - long-running operations as ARM does them: PUT answers 201 (create) or 200 (update) with
 *   provisioningState Creating/Updating and an `Azure-AsyncOperation` header; DELETE answers 202
 *   with `Azure-AsyncOperation` and `Location` (absent resource: 204). The operation status URL
 *   (…/providers/Microsoft.Compute/locations/{loc}/capsOperations/{id}) answers
 *   {"status":"InProgress"} with `Retry-After: 0` for the first `pollsBeforeDone` polls (default 2),
 *   then Succeeded (or Failed with an error object after `failNextVersion`); the `Location` URL
 *   answers 202 then 200. Only these polls advance an operation: the resource's GET shows
 *   Creating/Updating/Deleting until then. A resource with an operation under way refuses PUT and
 *   DELETE (409 OperationNotAllowed). Note: @azure/core-lro treats `Retry-After: 0` as "no hint"
 *   and waits its default 2 s between polls unless the caller passes `updateIntervalInMs`.
 * - errors in ARM's shape {"error":{"code","message","target"?}} with ARM's status codes, so the
 *   SDK raises RestError with `.code` and `.statusCode`. Where Azure's exact code for a rule is not
 *   known here, the stand-in's choice is marked by its message: 409 Conflict (duplicate identifier,
 *   changed source), 409 OperationNotAllowed (operation under way), 400 InvalidParameter (location
 *   differs from the gallery's), ReplicationJobsNotCompleted (failNextVersion).
 *
 * Not implemented, and refused (501 NotImplementedInStandIn) rather than faked: PATCH updates,
 * deleting galleries or image definitions, managed-image / snapshot / VM sources, data disks,
 * sharing, other Compute resources. Not enforced: RBAC, quotas, real replication or VHD contents
 * (only the blob's size is checked — no footer, no page-blob type), token signatures beyond
 * "issued here", soft delete, end-of-life dates, paging (lists come in one page).
 */
import { execFile } from 'node:child_process';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { readBody } from './http-body.js';

export interface AzureStandIn {
  /** https://127.0.0.1:PORT — ARM endpoint and Entra authority host. */
  endpoint: string;
  /** The self-signed certificate (PEM), for NODE_EXTRA_CA_CERTS or an https.Agent's `ca`. */
  caFile: string;
  tenantId: string; clientId: string; clientSecret: string; subscriptionId: string;
  /** Every request, in order (token requests without the secret). */
  requests: { method: string; path: string; apiVersion?: string; body?: unknown }[];
  /** Every refusal (ARM and Entra; for Entra, `code` is the OAuth `error`). */
  rejected: { method: string; path: string; status: number; code: string; message: string }[];
  galleries(): { name: string; location: string }[];
  images(gallery: string): { name: string; hyperVGeneration: string; identifier: { publisher: string; offer: string; sku: string }; tags: Record<string, string> }[];
  /** targetRegions are normalised region names (westeurope). */
  versions(gallery: string, image: string): { name: string; tags: Record<string, string>; sourceUri: string; targetRegions: string[]; provisioningState: string }[];
  /** Test helper, no HTTP: an existing, Succeeded gallery. */
  createGallery(name: string, location: string): void;
  /** The next image version PUT's operation ends Failed with this reason. */
  failNextVersion(reason: string): void;
  close(): Promise<void>;
}

export interface AzureStandInOptions {
  dir: string;
  resourceGroup: string;
  /** The resource group's location (default westeurope); informational. */
  location?: string;
  /** Operation status polls answered InProgress before the operation ends (default 2). */
  pollsBeforeDone?: number;
  /** Size of the blob at `uri`, or undefined when there is none. */
  sourceExists: (uri: string) => Promise<{ size: number } | undefined>;
}

// ---------------------------------------------------------------------------------------------
// Constants

/** Gallery API versions accepted: those with VHD sources given as uri + storageAccountId. @azure/arm-compute 24 sends 2025-03-03. */
export const API_VERSIONS = ['2022-03-03', '2022-08-03', '2023-07-03', '2024-03-03', '2025-03-03'] as const;

/** Azure public regions (normalised name → display name). */
export const REGIONS: Readonly<Record<string, string>> = {
  eastus: 'East US', eastus2: 'East US 2', westus: 'West US', westus2: 'West US 2', westus3: 'West US 3',
  centralus: 'Central US', northcentralus: 'North Central US', southcentralus: 'South Central US', westcentralus: 'West Central US',
  canadacentral: 'Canada Central', canadaeast: 'Canada East', brazilsouth: 'Brazil South', mexicocentral: 'Mexico Central',
  northeurope: 'North Europe', westeurope: 'West Europe', uksouth: 'UK South', ukwest: 'UK West', francecentral: 'France Central',
  germanywestcentral: 'Germany West Central', norwayeast: 'Norway East', swedencentral: 'Sweden Central',
  switzerlandnorth: 'Switzerland North', polandcentral: 'Poland Central', italynorth: 'Italy North', spaincentral: 'Spain Central',
  eastasia: 'East Asia', southeastasia: 'Southeast Asia', japaneast: 'Japan East', japanwest: 'Japan West',
  koreacentral: 'Korea Central', australiaeast: 'Australia East', australiasoutheast: 'Australia Southeast',
  centralindia: 'Central India', southindia: 'South India', uaenorth: 'UAE North', southafricanorth: 'South Africa North',
  qatarcentral: 'Qatar Central', israelcentral: 'Israel Central',
};

const ARM_AUDIENCES = ['https://management.azure.com', 'https://management.core.windows.net'];
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const INT32_MAX = 2_147_483_647;
const STORAGE_ACCOUNT_TYPES = ['Standard_LRS', 'Standard_ZRS', 'Premium_LRS', 'PremiumV2_LRS'];
const SECURITY_TYPES = ['Standard', 'TrustedLaunchSupported', 'TrustedLaunch', 'ConfidentialVmSupported', 'ConfidentialVM', 'TrustedLaunchAndConfidentialVmSupported'];
const FEATURES: Record<string, string[]> = {
  SecurityType: SECURITY_TYPES,
  IsAcceleratedNetworkSupported: ['True', 'False'],
  DiskControllerTypes: ['SCSI', 'NVMe', 'SCSI, NVMe', 'SCSI,NVMe'],
  IsHibernateSupported: ['True', 'False'],
};
const GALLERY_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9_.]{0,78}[A-Za-z0-9])?$/;
const IMAGE_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9])?$/;
const VERSION_NAME = /^(\d+)\.(\d+)\.(\d+)$/;
const STORAGE_ACCOUNT_ID = /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.Storage\/storageAccounts\/([a-z0-9]{3,24})$/i;

// ---------------------------------------------------------------------------------------------
// State

type ProvisioningState = 'Creating' | 'Updating' | 'Succeeded' | 'Failed' | 'Deleting';
interface ErrorBody { code: string; message: string; target?: string }
interface Feature { name: string; value: string }
interface Identifier { publisher: string; offer: string; sku: string }
interface TargetRegion { name: string; regionalReplicaCount: number; storageAccountType: string; excludeFromLatest?: boolean }

interface GalleryRec { name: string; location: string; tags: Record<string, string>; description?: string; state: ProvisioningState; images: Map<string, ImageRec> }
interface ImageRec {
  name: string; location: string; tags: Record<string, string>; description?: string; state: ProvisioningState;
  osType: string; osState: string; hyperVGeneration: string; architecture: string; identifier: Identifier; features: Feature[];
  versions: Map<string, VersionRec>;
}
interface VersionRec {
  name: string; location: string; tags: Record<string, string>; state: ProvisioningState;
  source: { uri: string; storageAccountId: string }; sizeBytes: number;
  targetRegions: TargetRegion[]; replicaCount: number; storageAccountType: string; excludeFromLatest: boolean;
  publishedDate: string; failure?: string; pending?: string; // pending: id of the operation under way
}
interface Operation {
  id: string; location: string; startTime: string; endTime?: string; polls: number;
  status: 'InProgress' | 'Succeeded' | 'Failed'; error?: ErrorBody; finish: (error?: ErrorBody) => void; failure?: ErrorBody;
}

class ArmError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly target?: string, readonly headers: Record<string, string> = {}) { super(message); }
}
class EntraError extends Error {
  constructor(readonly status: number, readonly error: string, readonly aadsts: number, message: string) { super(message); }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const norm = (location: string): string => location.replace(/\s+/g, '').toLowerCase();
const key = (name: string): string => name.toLowerCase();
const now = (): string => new Date().toISOString();
const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

function required(o: Obj, name: string, path: string): unknown {
  const v = o[name];
  if (v === undefined || v === null) throw new ArmError(400, 'InvalidParameter', `Required parameter '${path}' is missing (null).`, path);
  return v;
}
function str(o: Obj, name: string, path: string, opt = false): string | undefined {
  const v = opt ? o[name] ?? undefined : required(o, name, path);
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new ArmError(400, 'InvalidParameter', `The value of parameter '${path}' must be a non-empty string.`, path);
  return v;
}
function oneOf(value: string, allowed: readonly string[], path: string): string {
  const hit = allowed.find((a) => a.toLowerCase() === value.toLowerCase());
  if (!hit) throw new ArmError(400, 'InvalidParameter', `The value '${value}' of parameter '${path}' is not allowed. Allowed values are: ${allowed.join(', ')}.`, path);
  return hit;
}
function obj(o: Obj, name: string, path: string, opt = false): Obj | undefined {
  const v = opt ? o[name] ?? undefined : required(o, name, path);
  if (v === undefined) return undefined;
  if (!isObj(v)) throw new ArmError(400, 'InvalidParameter', `The value of parameter '${path}' must be an object.`, path);
  return v;
}

function parseTags(body: Obj): Record<string, string> {
  const t = body['tags'];
  if (t === undefined || t === null) return {};
  if (!isObj(t)) throw new ArmError(400, 'InvalidParameter', "The value of parameter 'tags' must be an object of strings.", 'tags');
  const entries = Object.entries(t);
  if (entries.length > 50) throw new ArmError(400, 'InvalidParameter', `A resource can have at most 50 tags; ${entries.length} given.`, 'tags');
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (typeof v !== 'string') throw new ArmError(400, 'InvalidParameter', `The value of tag '${k}' must be a string.`, 'tags');
    if (k.length === 0 || k.length > 512 || /[<>%&\\?/]/.test(k)) throw new ArmError(400, 'InvalidParameter', `The tag name '${k}' is invalid: 1-512 characters, none of <>%&\\?/.`, 'tags');
    if (v.length > 256) throw new ArmError(400, 'InvalidParameter', `The value of tag '${k}' is longer than 256 characters.`, 'tags');
    out[k] = v;
  }
  return out;
}

function parseLocation(body: Obj, kind: string): string {
  const raw = body['location'];
  if (raw === undefined || raw === null || raw === '') throw new ArmError(400, 'LocationRequired', 'The location property is required for this definition.');
  if (typeof raw !== 'string') throw new ArmError(400, 'InvalidParameter', "The value of parameter 'location' must be a string.", 'location');
  const loc = norm(raw);
  if (!REGIONS[loc]) {
    throw new ArmError(400, 'LocationNotAvailableForResourceType', `The provided location '${raw}' is not available for resource type '${kind}'. List of available regions for the resource type is '${Object.keys(REGIONS).join(',')}'.`);
  }
  return loc;
}

function sameLocation(child: string, gallery: GalleryRec, kind: string): void {
  if (child !== gallery.location) {
    throw new ArmError(400, 'InvalidParameter', `The ${kind} must be in the location of its gallery '${gallery.name}' ('${gallery.location}'), not '${child}'.`, 'location');
  }
}

function validateVersionName(name: string): void {
  const m = VERSION_NAME.exec(name);
  if (!m || [m[1], m[2], m[3]].some((p) => Number(p) > INT32_MAX)) {
    throw new ArmError(400, 'InvalidParameter', `The gallery image version name '${name}' is invalid. The gallery image version name should follow the Major(int32).Minor(int32).Patch(int32) format, where int is between 0 and 2,147,483,647 (inclusive). e.g. 1.0.0, 2018.12.01, etc.`, 'galleryImageVersionName');
  }
}

// ---------------------------------------------------------------------------------------------
// The server

class StandIn implements AzureStandIn {
  endpoint = '';
  caFile: string;
  readonly tenantId = randomUUID();
  readonly clientId = randomUUID();
  readonly clientSecret = randomBytes(30).toString('base64url');
  readonly subscriptionId = randomUUID();
  requests: AzureStandIn['requests'] = [];
  rejected: AzureStandIn['rejected'] = [];

  private server!: Server;
  private readonly keyFile: string;
  private readonly signingKey = randomBytes(32);
  private readonly tokens = new Map<string, { expiresAt: number }>();
  private readonly store = new Map<string, GalleryRec>();
  private readonly operations = new Map<string, Operation>();
  private readonly pollsBeforeDone: number;
  private readonly rgLocation: string;
  private nextVersionFailure: string | undefined;

  constructor(private readonly opts: AzureStandInOptions) {
    this.caFile = join(opts.dir, 'azure-standin-cert.pem');
    this.keyFile = join(opts.dir, 'azure-standin-key.pem');
    this.pollsBeforeDone = opts.pollsBeforeDone ?? 2;
    this.rgLocation = norm(opts.location ?? 'westeurope');
    if (!REGIONS[this.rgLocation]) throw new Error(`azure stand-in: unknown location ${opts.location}`);
    if (!Number.isInteger(this.pollsBeforeDone) || this.pollsBeforeDone < 0) throw new Error('azure stand-in: pollsBeforeDone must be an integer ≥ 0');
  }

  async listen(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-days', '2', '-keyout', this.keyFile, '-out', this.caFile,
    ]);
    const [key, cert] = await Promise.all([readFile(this.keyFile), readFile(this.caFile)]);
    this.server = createServer({ key, cert }, (req, res) => { void this.handle(req, res); });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.endpoint = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  // --- test helpers ---------------------------------------------------------------------------

  galleries(): { name: string; location: string }[] {
    return [...this.store.values()].map((g) => ({ name: g.name, location: g.location }));
  }

  images(gallery: string): ReturnType<AzureStandIn['images']> {
    return [...(this.store.get(key(gallery))?.images.values() ?? [])].map((i) => ({
      name: i.name, hyperVGeneration: i.hyperVGeneration, identifier: { ...i.identifier }, tags: { ...i.tags },
    }));
  }

  versions(gallery: string, image: string): ReturnType<AzureStandIn['versions']> {
    return [...(this.store.get(key(gallery))?.images.get(key(image))?.versions.values() ?? [])].map((v) => ({
      name: v.name, tags: { ...v.tags }, sourceUri: v.source.uri, targetRegions: v.targetRegions.map((t) => t.name), provisioningState: v.state,
    }));
  }

  createGallery(name: string, location: string): void {
    if (!GALLERY_NAME.test(name)) throw new Error(`azure stand-in: invalid gallery name ${name}`);
    const loc = norm(location);
    if (!REGIONS[loc]) throw new Error(`azure stand-in: unknown location ${location}`);
    if (this.store.has(key(name))) throw new Error(`azure stand-in: gallery ${name} exists`);
    this.store.set(key(name), { name, location: loc, tags: {}, state: 'Succeeded', images: new Map() });
  }

  failNextVersion(reason: string): void { this.nextVersionFailure = reason; }

  // --- HTTP -----------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', this.endpoint);
    const path = url.pathname;
    const apiVersion = url.searchParams.get('api-version') ?? undefined;
    let raw: Buffer;
    try { raw = await readBody(req, 4 * MIB, () => new Error('request body too large')); } catch { res.destroy(); return; }
    const segments = path.split('/').filter(Boolean).map((s) => decodeURIComponent(s));
    const isArm = segments[0]?.toLowerCase() === 'subscriptions';
    try {
      if (isArm) {
        let body: unknown;
        if (raw.length > 0) {
          try { body = JSON.parse(raw.toString('utf8')); } catch {
            this.requests.push({ method, path, apiVersion });
            throw new ArmError(400, 'InvalidRequestContent', 'The request content was invalid and could not be deserialized.');
          }
        }
        this.requests.push({ method, path, apiVersion, ...(body === undefined ? {} : { body }) });
        this.arm(req, res, method, url, segments, body);
        // arm() may have left an async part (the blob check); it sends itself.
      } else {
        const form = new URLSearchParams(raw.toString('utf8'));
        const logged = method === 'POST' ? Object.fromEntries([...form].filter(([k]) => k !== 'client_secret' && k !== 'client_assertion')) : undefined;
        this.requests.push({ method, path, ...(logged ? { body: logged } : {}) });
        this.entra(res, method, segments, form);
      }
    } catch (e) {
      this.fail(res, method, path, e);
    }
  }

  private fail(res: ServerResponse, method: string, path: string, e: unknown): void {
    if (e instanceof ArmError) {
      this.rejected.push({ method, path, status: e.status, code: e.code, message: e.message });
      const error: ErrorBody = { code: e.code, message: e.message, ...(e.target ? { target: e.target } : {}) };
      send(res, e.status, { error }, e.headers);
    } else if (e instanceof EntraError) {
      const description = `AADSTS${e.aadsts}: ${e.message}\r\nTrace ID: ${randomUUID()}\r\nCorrelation ID: ${randomUUID()}\r\nTimestamp: ${now()}`;
      this.rejected.push({ method, path, status: e.status, code: e.error, message: description });
      send(res, e.status, {
        error: e.error, error_description: description, error_codes: [e.aadsts], timestamp: now(),
        trace_id: randomUUID(), correlation_id: randomUUID(), error_uri: `${this.endpoint}/error?code=${e.aadsts}`,
      });
    } else {
      const message = e instanceof Error ? e.message : String(e);
      this.rejected.push({ method, path, status: 500, code: 'InternalServerError', message });
      send(res, 500, { error: { code: 'InternalServerError', message: `azure stand-in bug: ${message}` } });
    }
  }

  // --- Entra ----------------------------------------------------------------------------------

  private entra(res: ServerResponse, method: string, seg: string[], form: URLSearchParams): void {
    const [tenant, ...rest] = seg;
    const tail = rest.join('/').toLowerCase();
    if (tenant?.toLowerCase() === 'common' && tail.startsWith('discovery/instance')) {
      throw new EntraError(404, 'invalid_instance', 50049, "Unknown or invalid instance: this authority host is not a Microsoft cloud. Set 'disableInstanceDiscovery: true' on the credential.");
    }
    if (tail !== 'v2.0/.well-known/openid-configuration' && tail !== 'oauth2/v2.0/token') {
      throw new EntraError(404, 'invalid_request', 90011, `The stand-in serves only /{tenant}/v2.0/.well-known/openid-configuration and /{tenant}/oauth2/v2.0/token, not ${method} /${seg.join('/')}.`);
    }
    if (tenant?.toLowerCase() !== this.tenantId) {
      throw new EntraError(400, tail.startsWith('oauth2') ? 'invalid_request' : 'invalid_tenant', 90002, `Tenant '${tenant ?? ''}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`);
    }
    const base = `${this.endpoint}/${this.tenantId}`;
    if (tail === 'v2.0/.well-known/openid-configuration') {
      if (method !== 'GET') throw new EntraError(405, 'invalid_request', 90056, `${method} is not supported here.`);
      send(res, 200, {
        token_endpoint: `${base}/oauth2/v2.0/token`,
        token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
        jwks_uri: `${base}/discovery/v2.0/keys`,
        response_modes_supported: ['query', 'fragment', 'form_post'],
        subject_types_supported: ['pairwise'],
        id_token_signing_alg_values_supported: ['RS256'],
        response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
        scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
        issuer: `${base}/v2.0`,
        request_uri_parameter_supported: false,
        authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
        device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
        end_session_endpoint: `${base}/oauth2/v2.0/logout`,
        tenant_region_scope: 'EU',
        cloud_instance_name: 'microsoftonline.com',
      });
      return;
    }
    if (method !== 'POST') throw new EntraError(405, 'invalid_request', 900561, 'The endpoint only accepts POST requests.');
    const grant = form.get('grant_type');
    if (!grant) throw new EntraError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'.");
    if (grant !== 'client_credentials') throw new EntraError(400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grant}'; the stand-in supports client_credentials only.`);
    const clientId = form.get('client_id');
    if (!clientId) throw new EntraError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'client_id'.");
    if (clientId.toLowerCase() !== this.clientId) {
      throw new EntraError(400, 'unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${this.tenantId}'.`);
    }
    const scopes = (form.get('scope') ?? '').split(' ').filter((s) => s && !['openid', 'profile', 'offline_access'].includes(s));
    if (scopes.length === 0) throw new EntraError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'scope'.");
    if (scopes.length > 1 || !scopes[0]!.endsWith('/.default')) {
      throw new EntraError(400, 'invalid_scope', 1002012, `The provided value for scope ${scopes.join(' ')} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
    }
    const resource = scopes[0]!.slice(0, -'/.default'.length).replace(/\/$/, '');
    if (!ARM_AUDIENCES.includes(resource.toLowerCase())) {
      throw new EntraError(400, 'invalid_resource', 500011, `The resource principal named ${resource} was not found in the tenant named ${this.tenantId}. The stand-in issues tokens for Azure Resource Manager (https://management.azure.com/.default) only.`);
    }
    const secret = form.get('client_secret');
    if (secret === null) {
      throw new EntraError(401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
    }
    if (secret !== this.clientSecret) {
      throw new EntraError(401, 'invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${this.clientId}'.`);
    }
    const iat = Math.floor(Date.now() / 1000);
    const expiresIn = 3599;
    const payload = {
      aud: `${resource}/`, iss: `https://sts.windows.net/${this.tenantId}/`, iat, nbf: iat, exp: iat + expiresIn,
      appid: this.clientId, appidacr: '1', idtyp: 'app', oid: this.clientId, sub: this.clientId, tid: this.tenantId, uti: randomUUID(), ver: '1.0',
    };
    const unsigned = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'HS256' }))}.${b64url(JSON.stringify(payload))}`;
    const token = `${unsigned}.${b64url(createHmac('sha256', this.signingKey).update(unsigned).digest())}`;
    this.tokens.set(token, { expiresAt: (iat + expiresIn) * 1000 });
    send(res, 200, { token_type: 'Bearer', expires_in: expiresIn, ext_expires_in: expiresIn, access_token: token });
  }

  // --- ARM ------------------------------------------------------------------------------------

  private authenticate(req: IncomingMessage): void {
    const challenge = (d: string): Record<string, string> => ({
      'WWW-Authenticate': `Bearer authorization_uri="${this.endpoint}/${this.tenantId}", error="invalid_token", error_description="${d}"`,
    });
    const header = req.headers.authorization;
    if (!header) {
      throw new ArmError(401, 'AuthenticationFailed', "Authentication failed. The 'Authorization' header is missing.", undefined, challenge("The authentication failed because of missing 'Authorization' header."));
    }
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new ArmError(401, 'AuthenticationFailed', "Authentication failed. The 'Authorization' header is provided in an invalid format.", undefined, challenge('Invalid format.'));
    const t = this.tokens.get(m[1]!);
    if (!t) throw new ArmError(401, 'InvalidAuthenticationToken', 'The access token is invalid.', undefined, challenge('The access token is invalid.'));
    if (t.expiresAt <= Date.now()) {
      throw new ArmError(401, 'ExpiredAuthenticationToken', `The access token expiry UTC time '${new Date(t.expiresAt).toISOString()}' is earlier than current UTC time '${now()}'.`, undefined, challenge('The access token has expired.'));
    }
  }

  private arm(req: IncomingMessage, res: ServerResponse, method: string, url: URL, seg: string[], body: unknown): void {
    this.authenticate(req);
    const apiVersion = url.searchParams.get('api-version');
    if (!apiVersion) throw new ArmError(400, 'MissingApiVersionParameter', "The api-version query parameter (?api-version=) is required for all requests.");
    const lower = seg.map((s) => s.toLowerCase());
    const [, sub] = seg;
    if (lower[1] !== this.subscriptionId) throw new ArmError(404, 'SubscriptionNotFound', `The subscription '${sub ?? ''}' could not be found.`);

    // Operation status: /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/capsOperations/{id}
    if (lower[2] === 'providers' && lower[3] === 'microsoft.compute' && lower[4] === 'locations' && lower[6] === 'capsoperations' && seg.length === 8) {
      if (method !== 'GET') throw notImplemented(method, url.pathname);
      this.pollOperation(res, seg[7]!, url.searchParams.get('monitor') === 'true');
      return;
    }
    if (lower[2] !== 'resourcegroups' || seg.length < 4) throw notImplemented(method, url.pathname);
    if (lower[3] !== this.opts.resourceGroup.toLowerCase()) throw new ArmError(404, 'ResourceGroupNotFound', `Resource group '${seg[3]!}' could not be found.`);
    if (lower[4] !== 'providers' || lower[5] !== 'microsoft.compute' || lower[6] !== 'galleries') throw notImplemented(method, url.pathname);
    if (!(API_VERSIONS as readonly string[]).includes(apiVersion)) {
      throw new ArmError(400, 'NoRegisteredProviderFound', `No registered resource provider found for location '${this.rgLocation}' and API version '${apiVersion}' for type 'galleries'. The supported api-versions are '${API_VERSIONS.join(', ')}'.`);
    }
    const names = seg.slice(7);
    // names: [] | [g] | [g, 'images'] | [g, 'images', i] | [g, 'images', i, 'versions'] | [g, 'images', i, 'versions', v]
    if ((names.length >= 2 && lower[8] !== 'images') || (names.length >= 4 && lower[10] !== 'versions') || names.length > 5) throw notImplemented(method, url.pathname);
    const [g, , i, , v] = names;
    const opts = { res, method, apiVersion, expand: url.searchParams.get('$expand') ?? undefined };
    if (names.length === 0) {
      if (method !== 'GET') throw notImplemented(method, url.pathname);
      send(res, 200, { value: [...this.store.values()].map((x) => this.galleryJson(x)) });
    } else if (names.length === 1) {
      this.gallery(g!, body, opts);
    } else if (names.length === 2) {
      if (method !== 'GET') throw notImplemented(method, url.pathname);
      send(res, 200, { value: [...this.parentGallery(g!).images.values()].map((x) => this.imageJson(g!, x)) });
    } else if (names.length === 3) {
      this.image(g!, i!, body, opts);
    } else if (names.length === 4) {
      if (method !== 'GET') throw notImplemented(method, url.pathname);
      const image = this.parentImage(g!, i!);
      send(res, 200, { value: [...image.versions.values()].map((x) => this.versionJson(g!, image, x, false)) });
    } else {
      this.version(g!, i!, v!, body, opts, url.pathname);
    }
  }

  private id(...parts: string[]): string {
    const [g, i, v] = parts;
    let id = `/subscriptions/${this.subscriptionId}/resourceGroups/${this.opts.resourceGroup}/providers/Microsoft.Compute/galleries/${g!}`;
    if (i !== undefined) id += `/images/${i}`;
    if (v !== undefined) id += `/versions/${v}`;
    return id;
  }

  private parentGallery(name: string): GalleryRec {
    const g = this.store.get(key(name));
    if (!g) throw new ArmError(404, 'ParentResourceNotFound', `Can not perform requested operation on nested resource. Parent resource '${name}' not found.`);
    return g;
  }

  private parentImage(gallery: string, name: string): ImageRec {
    const i = this.parentGallery(gallery).images.get(key(name));
    if (!i) throw new ArmError(404, 'ParentResourceNotFound', `Can not perform requested operation on nested resource. Parent resource '${gallery}/${name}' not found.`);
    return i;
  }

  /** `resource`: e.g. galleries/g/images/i. */
  private notFound(resource: string): ArmError {
    return new ArmError(404, 'ResourceNotFound', `The Resource 'Microsoft.Compute/${resource}' under resource group '${this.opts.resourceGroup}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`);
  }

  private busy(state: ProvisioningState, what: string): void {
    if (state === 'Creating' || state === 'Updating' || state === 'Deleting') {
      throw new ArmError(409, 'OperationNotAllowed', `An operation on ${what} is still in progress (provisioningState ${state}); wait for it to finish.`);
    }
  }

  // --- galleries ---

  private galleryJson(g: GalleryRec): Obj {
    return {
      id: this.id(g.name), name: g.name, type: 'Microsoft.Compute/galleries', location: g.location, tags: g.tags,
      properties: {
        ...(g.description !== undefined ? { description: g.description } : {}),
        identifier: { uniqueName: `${this.subscriptionId}-${g.name.toUpperCase()}` },
        provisioningState: g.state,
      },
    };
  }

  private gallery(name: string, body: unknown, o: { res: ServerResponse; method: string; apiVersion: string }): void {
    const existing = this.store.get(key(name));
    if (o.method === 'GET') {
      if (!existing) throw this.notFound(`galleries/${name}`);
      send(o.res, 200, this.galleryJson(existing));
      return;
    }
    if (o.method !== 'PUT') throw notImplemented(o.method, `galleries/${name}`);
    if (!GALLERY_NAME.test(name)) {
      throw new ArmError(400, 'InvalidParameter', `The gallery name '${name}' is invalid. The allowed characters are English alphanumeric characters, with underscores and periods allowed in the middle, up to 80 characters total. All other special characters, including dashes, are disallowed.`, 'galleryName');
    }
    if (!isObj(body)) throw new ArmError(400, 'InvalidRequestContent', 'The request content must be a JSON object.');
    const location = parseLocation(body, 'Microsoft.Compute/galleries');
    const tags = parseTags(body);
    const props = obj(body, 'properties', 'properties', true) ?? {};
    const description = str(props, 'description', 'properties.description', true);
    if (existing) {
      this.busy(existing.state, `gallery '${existing.name}'`);
      if (existing.location !== location) throw invalidLocation(existing.name, existing.location, location);
      Object.assign(existing, { tags, description, state: 'Updating' as ProvisioningState });
      const op = this.startOperation(location, () => { existing.state = 'Succeeded'; });
      send(o.res, 200, this.galleryJson(existing), this.asyncHeaders(op, o.apiVersion));
      return;
    }
    const g: GalleryRec = { name, location, tags, ...(description !== undefined ? { description } : {}), state: 'Creating', images: new Map() };
    this.store.set(key(name), g);
    const op = this.startOperation(location, (err) => { g.state = err ? 'Failed' : 'Succeeded'; });
    send(o.res, 201, this.galleryJson(g), this.asyncHeaders(op, o.apiVersion));
  }

  // --- image definitions ---

  private imageJson(gallery: string, i: ImageRec): Obj {
    return {
      id: this.id(gallery, i.name), name: i.name, type: 'Microsoft.Compute/galleries/images', location: i.location, tags: i.tags,
      properties: {
        ...(i.description !== undefined ? { description: i.description } : {}),
        osType: i.osType, osState: i.osState, hyperVGeneration: i.hyperVGeneration, architecture: i.architecture,
        identifier: i.identifier, ...(i.features.length ? { features: i.features } : {}), provisioningState: i.state,
      },
    };
  }

  private image(gallery: string, name: string, body: unknown, o: { res: ServerResponse; method: string; apiVersion: string }): void {
    const g = this.parentGallery(gallery);
    const existing = g.images.get(key(name));
    if (o.method === 'GET') {
      if (!existing) throw this.notFound(`galleries/${g.name}/images/${name}`);
      send(o.res, 200, this.imageJson(g.name, existing));
      return;
    }
    if (o.method !== 'PUT') throw notImplemented(o.method, `galleries/${gallery}/images/${name}`);
    if (!IMAGE_NAME.test(name)) {
      throw new ArmError(400, 'InvalidParameter', `The gallery image name '${name}' is invalid. The allowed characters are English alphanumeric characters, with underscores, periods and hyphens allowed in the middle, up to 80 characters total.`, 'galleryImageName');
    }
    if (!isObj(body)) throw new ArmError(400, 'InvalidRequestContent', 'The request content must be a JSON object.');
    const location = parseLocation(body, 'Microsoft.Compute/galleries/images');
    sameLocation(location, g, 'gallery image definition');
    const tags = parseTags(body);
    const p = obj(body, 'properties', 'properties')!;
    const osType = oneOf(str(p, 'osType', 'properties.osType')!, ['Linux', 'Windows'], 'properties.osType');
    const osState = oneOf(str(p, 'osState', 'properties.osState')!, ['Generalized', 'Specialized'], 'properties.osState');
    const hyperVGeneration = oneOf(str(p, 'hyperVGeneration', 'properties.hyperVGeneration', true) ?? 'V1', ['V1', 'V2'], 'properties.hyperVGeneration');
    const architecture = oneOf(str(p, 'architecture', 'properties.architecture', true) ?? 'x64', ['x64', 'Arm64'], 'properties.architecture');
    const idObj = obj(p, 'identifier', 'properties.identifier')!;
    const identifier: Identifier = {
      publisher: str(idObj, 'publisher', 'properties.identifier.publisher')!,
      offer: str(idObj, 'offer', 'properties.identifier.offer')!,
      sku: str(idObj, 'sku', 'properties.identifier.sku')!,
    };
    const description = str(p, 'description', 'properties.description', true);
    const features = parseFeatures(p['features']);
    if (existing) {
      this.busy(existing.state, `gallery image definition '${existing.name}'`);
      if (existing.location !== location) throw invalidLocation(existing.name, existing.location, location);
      const changes: [string, string, string][] = [
        ['osType', existing.osType, osType], ['osState', existing.osState, osState], ['hyperVGeneration', existing.hyperVGeneration, hyperVGeneration],
        ['architecture', existing.architecture, architecture], ['identifier', JSON.stringify(existing.identifier), JSON.stringify(identifier)],
      ];
      for (const [prop, was, now_] of changes) {
        if (was !== now_) {
          throw new ArmError(400, 'PropertyChangeNotAllowed', `Changing property 'galleryImage.properties.${prop}' is not allowed (from ${was} to ${now_}).`, `galleryImage.properties.${prop}`);
        }
      }
      const featureKey = (fs: Feature[]): string => JSON.stringify([...fs].sort((a, b) => a.name.localeCompare(b.name)));
      if (featureKey(existing.features) !== featureKey(features) && p['allowUpdateImage'] !== true) {
        throw new ArmError(400, 'PropertyChangeNotAllowed', "Changing property 'galleryImage.properties.features' is not allowed unless 'properties.allowUpdateImage' is true.", 'galleryImage.properties.features');
      }
    }
    const securityType = features.find((f) => f.name === 'SecurityType')?.value ?? 'Standard';
    if (securityType !== 'Standard' && hyperVGeneration !== 'V2') {
      throw new ArmError(400, 'InvalidParameter', `The feature SecurityType '${securityType}' requires hyperVGeneration 'V2'.`, 'properties.features');
    }
    if (architecture === 'Arm64' && hyperVGeneration !== 'V2') {
      throw new ArmError(400, 'InvalidParameter', "Architecture 'Arm64' requires hyperVGeneration 'V2'.", 'properties.architecture');
    }
    const clash = [...g.images.values()].find((x) => x !== existing && ['publisher', 'offer', 'sku'].every((k) => {
      const kk = k as keyof Identifier;
      return x.identifier[kk].toLowerCase() === identifier[kk].toLowerCase();
    }));
    if (clash) {
      throw new ArmError(409, 'Conflict', `The gallery image identifier (publisher '${identifier.publisher}', offer '${identifier.offer}', sku '${identifier.sku}') is already used by image definition '${clash.name}' in gallery '${g.name}'.`, 'properties.identifier');
    }
    if (existing) {
      Object.assign(existing, { tags, description, features, state: 'Updating' as ProvisioningState });
      const op = this.startOperation(location, () => { existing.state = 'Succeeded'; });
      send(o.res, 200, this.imageJson(g.name, existing), this.asyncHeaders(op, o.apiVersion));
      return;
    }
    const image: ImageRec = {
      name, location, tags, ...(description !== undefined ? { description } : {}), state: 'Creating',
      osType, osState, hyperVGeneration, architecture, identifier, features, versions: new Map(),
    };
    g.images.set(key(name), image);
    const op = this.startOperation(location, (err) => { image.state = err ? 'Failed' : 'Succeeded'; });
    send(o.res, 201, this.imageJson(g.name, image), this.asyncHeaders(op, o.apiVersion));
  }

  // --- image versions ---

  private versionJson(gallery: string, image: ImageRec, v: VersionRec, withReplication: boolean): Obj {
    const regionState = v.state === 'Failed' ? 'Failed' : v.state === 'Succeeded' ? 'Completed' : 'Replicating';
    return {
      id: this.id(gallery, image.name, v.name), name: v.name, type: 'Microsoft.Compute/galleries/images/versions', location: v.location, tags: v.tags,
      properties: {
        publishingProfile: {
          targetRegions: v.targetRegions.map((t) => ({ ...t, name: REGIONS[t.name] ?? t.name })),
          replicaCount: v.replicaCount, excludeFromLatest: v.excludeFromLatest, publishedDate: v.publishedDate,
          storageAccountType: v.storageAccountType, replicationMode: 'Full',
        },
        storageProfile: {
          osDiskImage: { sizeInGB: Math.ceil((v.sizeBytes - 512) / GIB), hostCaching: 'ReadWrite', source: { ...v.source } },
        },
        provisioningState: v.state,
        ...(withReplication ? {
          replicationStatus: {
            aggregatedState: regionState === 'Replicating' ? 'InProgress' : regionState,
            summary: v.targetRegions.map((t) => ({
              region: REGIONS[t.name] ?? t.name, state: regionState,
              details: regionState === 'Failed' ? (v.failure ?? '') : '', progress: regionState === 'Completed' ? 100 : 0,
            })),
          },
        } : {}),
      },
    };
  }

  private version(gallery: string, imageName: string, name: string, body: unknown, o: { res: ServerResponse; method: string; apiVersion: string; expand?: string | undefined }, path: string): void {
    const image = this.parentImage(gallery, imageName);
    const g = this.parentGallery(gallery);
    const existing = image.versions.get(key(name));
    const type = 'Microsoft.Compute/galleries/images/versions';
    if (o.method === 'GET') {
      if (!existing) throw this.notFound(`galleries/${g.name}/images/${image.name}/versions/${name}`);
      if (o.expand !== undefined && !['replicationstatus', 'uefisettings'].includes(o.expand.toLowerCase())) {
        throw new ArmError(400, 'InvalidParameter', `The value '${o.expand}' of parameter '$expand' is not allowed. Allowed values are: ReplicationStatus, UefiSettings.`, '$expand');
      }
      send(o.res, 200, this.versionJson(g.name, image, existing, o.expand?.toLowerCase() === 'replicationstatus'));
      return;
    }
    if (o.method === 'DELETE') {
      if (!existing) { send(o.res, 204, undefined); return; }
      if (existing.state === 'Deleting' && existing.pending) {
        const op = this.operations.get(existing.pending)!;
        send(o.res, 202, undefined, this.asyncHeaders(op, o.apiVersion, true));
        return;
      }
      this.busy(existing.state, `gallery image version '${existing.name}'`);
      existing.state = 'Deleting';
      const op = this.startOperation(existing.location, () => { image.versions.delete(key(name)); });
      existing.pending = op.id;
      send(o.res, 202, undefined, this.asyncHeaders(op, o.apiVersion, true));
      return;
    }
    if (o.method !== 'PUT') throw notImplemented(o.method, path);
    validateVersionName(name);
    if (!isObj(body)) throw new ArmError(400, 'InvalidRequestContent', 'The request content must be a JSON object.');
    if (image.state !== 'Succeeded') throw new ArmError(409, 'OperationNotAllowed', `The gallery image definition '${image.name}' is in provisioningState ${image.state}.`);
    const location = parseLocation(body, type);
    sameLocation(location, g, 'gallery image version');
    const tags = parseTags(body);
    const p = obj(body, 'properties', 'properties')!;
    const storage = obj(p, 'storageProfile', 'properties.storageProfile')!;
    if (storage['source'] !== undefined || storage['dataDiskImages'] !== undefined) {
      throw notImplemented('PUT', `${path} with storageProfile.source or dataDiskImages (the stand-in supports a VHD osDiskImage.source only)`);
    }
    const osDisk = obj(storage, 'osDiskImage', 'properties.storageProfile.osDiskImage')!;
    const src = obj(osDisk, 'source', 'properties.storageProfile.osDiskImage.source')!;
    const uri = str(src, 'uri', 'properties.storageProfile.osDiskImage.source.uri')!;
    const accountId = str(src, 'storageAccountId', 'properties.storageProfile.osDiskImage.source.storageAccountId', true)
      ?? str(src, 'id', 'properties.storageProfile.osDiskImage.source.id', true);
    if (accountId === undefined) {
      throw new ArmError(400, 'InvalidParameter', "Required parameter 'properties.storageProfile.osDiskImage.source.storageAccountId' is missing (null): a VHD source needs the id of its storage account.", 'properties.storageProfile.osDiskImage.source.storageAccountId');
    }
    const publishing = obj(p, 'publishingProfile', 'properties.publishingProfile', true) ?? {};
    const { targetRegions, replicaCount, storageAccountType } = parsePublishing(publishing, location);
    const excludeFromLatest = publishing['excludeFromLatest'] === undefined ? false : publishing['excludeFromLatest'];
    if (typeof excludeFromLatest !== 'boolean') throw new ArmError(400, 'InvalidParameter', "The value of parameter 'properties.publishingProfile.excludeFromLatest' must be a boolean.", 'properties.publishingProfile.excludeFromLatest');

    if (existing) {
      this.busy(existing.state, `gallery image version '${existing.name}'`);
      if (existing.source.uri !== uri || existing.source.storageAccountId.toLowerCase() !== accountId.toLowerCase()) {
        throw new ArmError(409, 'Conflict', `Changing property 'galleryImageVersion.properties.storageProfile.osDiskImage.source' is not allowed: version '${existing.name}' was made from '${existing.source.uri}'.`, 'properties.storageProfile.osDiskImage.source');
      }
      if (existing.location !== location) throw invalidLocation(existing.name, existing.location, location);
      if (existing.storageAccountType !== storageAccountType) {
        throw new ArmError(400, 'PropertyChangeNotAllowed', "Changing property 'galleryImageVersion.properties.publishingProfile.storageAccountType' is not allowed.", 'properties.publishingProfile.storageAccountType');
      }
      const failure = this.takeFailure(targetRegions);
      Object.assign(existing, { tags, targetRegions, replicaCount, excludeFromLatest, state: 'Updating' as ProvisioningState });
      delete existing.failure;
      const op = this.startOperation(location, (err) => this.settleVersion(existing, err), failure);
      send(o.res, 200, this.versionJson(g.name, image, existing, false), this.asyncHeaders(op, o.apiVersion));
      return;
    }
    const account = STORAGE_ACCOUNT_ID.exec(accountId)?.[1]?.toLowerCase();
    if (!account) {
      throw new ArmError(400, 'InvalidParameter', `The storage account id '${accountId}' is not a valid resource id (/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}).`, 'properties.storageProfile.osDiskImage.source.storageAccountId');
    }
    let parsed: URL;
    try { parsed = new URL(uri); } catch {
      throw new ArmError(400, 'InvalidParameter', `The source uri '${uri}' is not a valid blob URL.`, 'properties.storageProfile.osDiskImage.source.uri');
    }
    if (!parsed.pathname.toLowerCase().endsWith('.vhd')) {
      throw new ArmError(400, 'InvalidParameter', `The source uri '${uri}' is not a VHD blob: it must end in '.vhd'.`, 'properties.storageProfile.osDiskImage.source.uri');
    }
    const host = parsed.hostname.toLowerCase();
    const firstSegment = parsed.pathname.split('/')[1]?.toLowerCase();
    if (!(host.startsWith(`${account}.blob.`) || firstSegment === account)) {
      throw new ArmError(400, 'InvalidParameter', `The source uri '${uri}' is not in storage account '${account}' named by storageAccountId.`, 'properties.storageProfile.osDiskImage.source.uri');
    }
    // The rest waits for the blob look-up; nothing else may claim the name meanwhile.
    const placeholder: VersionRec = {
      name, location, tags, state: 'Creating', source: { uri, storageAccountId: accountId }, sizeBytes: 512,
      targetRegions, replicaCount, storageAccountType, excludeFromLatest, publishedDate: now(),
    };
    image.versions.set(key(name), placeholder);
    const sourcePath = 'properties.storageProfile.osDiskImage.source.uri';
    void this.opts.sourceExists(uri).then((blob) => {
      if (!blob) throw new ArmError(400, 'InvalidParameter', `The source blob '${uri}' does not exist or cannot be read.`, sourcePath);
      if (blob.size < MIB + 512 || (blob.size - 512) % MIB !== 0) {
        throw new ArmError(400, 'InvalidParameter', `The source blob '${uri}' has ${blob.size} bytes: a fixed VHD must be a whole number of MiB plus its 512-byte footer (N MiB + 512).`, sourcePath);
      }
      placeholder.sizeBytes = blob.size;
      const op = this.startOperation(location, (err) => this.settleVersion(placeholder, err), this.takeFailure(targetRegions));
      send(o.res, 201, this.versionJson(g.name, image, placeholder, false), this.asyncHeaders(op, o.apiVersion));
    }).catch((e: unknown) => {
      if (image.versions.get(key(name)) === placeholder) image.versions.delete(key(name));
      this.fail(o.res, 'PUT', path, e);
    });
  }

  private takeFailure(targetRegions: TargetRegion[]): ErrorBody | undefined {
    const reason = this.nextVersionFailure;
    if (reason === undefined) return undefined;
    this.nextVersionFailure = undefined;
    const region = REGIONS[targetRegions[0]!.name] ?? targetRegions[0]!.name;
    return { code: 'ReplicationJobsNotCompleted', message: `Replication job not completed at region: '${region}'. ${reason}` };
  }

  private settleVersion(v: VersionRec, err: ErrorBody | undefined): void {
    v.state = err ? 'Failed' : 'Succeeded';
    if (err) v.failure = err.message; else delete v.failure;
  }

  // --- long-running operations ---

  private startOperation(location: string, finish: (error?: ErrorBody) => void, failure?: ErrorBody): Operation {
    const op: Operation = { id: randomUUID(), location, startTime: now(), polls: 0, status: 'InProgress', finish, ...(failure ? { failure } : {}) };
    this.operations.set(op.id, op);
    return op;
  }

  private asyncHeaders(op: Operation, apiVersion: string, withLocation = false): Record<string, string> {
    const url = `${this.endpoint}/subscriptions/${this.subscriptionId}/providers/Microsoft.Compute/locations/${op.location}/capsOperations/${op.id}?api-version=${apiVersion}`;
    return { 'Azure-AsyncOperation': url, ...(withLocation ? { Location: `${url}&monitor=true` } : {}), 'Retry-After': '0' };
  }

  private pollOperation(res: ServerResponse, id: string, monitor: boolean): void {
    const op = this.operations.get(id);
    if (!op) throw new ArmError(404, 'ResourceNotFound', `The operation '${id}' was not found.`);
    if (op.status === 'InProgress') {
      op.polls++;
      if (op.polls > this.pollsBeforeDone) {
        op.status = op.failure ? 'Failed' : 'Succeeded';
        op.endTime = now();
        if (op.failure) op.error = op.failure;
        op.finish(op.failure);
      }
    }
    if (monitor) {
      if (op.status === 'InProgress') send(res, 202, undefined, { 'Retry-After': '0', Location: `${this.endpoint}/subscriptions/${this.subscriptionId}/providers/Microsoft.Compute/locations/${op.location}/capsOperations/${op.id}?monitor=true` });
      else if (op.status === 'Succeeded') send(res, 200, undefined);
      else send(res, 400, { error: op.error });
      return;
    }
    send(res, 200, {
      startTime: op.startTime, ...(op.endTime ? { endTime: op.endTime } : {}), status: op.status,
      ...(op.error ? { error: op.error } : {}), name: op.id,
    }, op.status === 'InProgress' ? { 'Retry-After': '0' } : {});
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function parseFeatures(v: unknown): Feature[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ArmError(400, 'InvalidParameter', "The value of parameter 'properties.features' must be an array.", 'properties.features');
  const seen = new Set<string>();
  return v.map((f: unknown, n) => {
    const path = `properties.features[${n}]`;
    if (!isObj(f)) throw new ArmError(400, 'InvalidParameter', `The value of parameter '${path}' must be an object.`, path);
    const rawName = str(f, 'name', `${path}.name`)!;
    const name = oneOf(rawName, Object.keys(FEATURES), `${path}.name`);
    const value = oneOf(str(f, 'value', `${path}.value`)!, FEATURES[name]!, `${path}.value`);
    if (seen.has(name)) throw new ArmError(400, 'InvalidParameter', `The feature '${name}' is given twice.`, path);
    seen.add(name);
    return { name, value };
  });
}

function parsePublishing(pp: Obj, location: string): { targetRegions: TargetRegion[]; replicaCount: number; storageAccountType: string } {
  const base = 'properties.publishingProfile';
  const count = (v: unknown, path: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 100) throw new ArmError(400, 'InvalidParameter', `The value of parameter '${path}' must be an integer from 1 to 100.`, path);
    return v;
  };
  const replicaCount = pp['replicaCount'] === undefined ? 1 : count(pp['replicaCount'], `${base}.replicaCount`);
  const storageAccountType = oneOf(str(pp, 'storageAccountType', `${base}.storageAccountType`, true) ?? 'Standard_LRS', STORAGE_ACCOUNT_TYPES, `${base}.storageAccountType`);
  const raw = pp['targetRegions'];
  if (raw === undefined || raw === null) return { targetRegions: [{ name: location, regionalReplicaCount: replicaCount, storageAccountType }], replicaCount, storageAccountType };
  if (!Array.isArray(raw) || raw.length === 0) throw new ArmError(400, 'InvalidParameter', `The value of parameter '${base}.targetRegions' must be a non-empty array.`, `${base}.targetRegions`);
  const targetRegions = raw.map((t: unknown, n): TargetRegion => {
    const path = `${base}.targetRegions[${n}]`;
    if (!isObj(t)) throw new ArmError(400, 'InvalidParameter', `The value of parameter '${path}' must be an object.`, path);
    const display = str(t, 'name', `${path}.name`)!;
    const name = norm(display);
    if (!REGIONS[name]) throw new ArmError(400, 'InvalidParameter', `The target region '${display}' is not an Azure region.`, `${path}.name`);
    const region: TargetRegion = {
      name,
      regionalReplicaCount: t['regionalReplicaCount'] === undefined ? replicaCount : count(t['regionalReplicaCount'], `${path}.regionalReplicaCount`),
      storageAccountType: oneOf(str(t, 'storageAccountType', `${path}.storageAccountType`, true) ?? storageAccountType, STORAGE_ACCOUNT_TYPES, `${path}.storageAccountType`),
    };
    if (t['excludeFromLatest'] !== undefined) {
      if (typeof t['excludeFromLatest'] !== 'boolean') throw new ArmError(400, 'InvalidParameter', `The value of parameter '${path}.excludeFromLatest' must be a boolean.`, `${path}.excludeFromLatest`);
      region.excludeFromLatest = t['excludeFromLatest'];
    }
    return region;
  });
  const names = targetRegions.map((t) => t.name);
  const dup = names.find((x, n) => names.indexOf(x) !== n);
  if (dup) throw new ArmError(400, 'InvalidParameter', `The target region '${REGIONS[dup] ?? dup}' is given more than once.`, `${base}.targetRegions`);
  if (!names.includes(location)) {
    throw new ArmError(400, 'InvalidParameter', `The target regions must include the source region '${REGIONS[location] ?? location}' (the version's location).`, `${base}.targetRegions`);
  }
  return { targetRegions, replicaCount, storageAccountType };
}

function invalidLocation(name: string, was: string, now_: string): ArmError {
  return new ArmError(400, 'InvalidResourceLocation', `The resource '${name}' already exists in location '${was}'. A resource with the same name cannot be created in location '${now_}'. Please select a new resource name.`);
}

function notImplemented(method: string, what: string): ArmError {
  return new ArmError(501, 'NotImplementedInStandIn', `The Azure stand-in does not implement ${method} ${what}.`);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': 'application/json; charset=utf-8' }),
    'Content-Length': Buffer.byteLength(text),
    'x-ms-request-id': randomUUID(), 'x-ms-correlation-request-id': randomUUID(),
    ...headers,
  });
  res.end(text);
}

export async function startAzureStandIn(opts: AzureStandInOptions): Promise<AzureStandIn> {
  const standIn = new StandIn(opts);
  await standIn.listen();
  return standIn;
}
