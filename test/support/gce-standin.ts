/**
 * A stand-in for Google Cloud's OAuth 2.0 token endpoint, the Cloud Storage JSON API (resumable
 * uploads) and the Compute Engine v1 images API, for Kiln's tests. It is NOT Google, and no
 * emulator for these APIs exists here: it enforces the rules below itself.
 *
 * One HTTPS server on 127.0.0.1 (random port, `url`) serves all three. Its certificate is
 * self-signed, made at start with `openssl` (`caFile`), for IP:127.0.0.1 and for Google's two
 * token hosts. The official SDKs talk to it unchanged:
 * - `new Storage({ projectId, apiEndpoint: url, useAuthWithCustomEndpoint: true, keyFilename })`
 *   (@google-cloud/storage 7: uploads via gaxios, metadata/list/delete via teeny-request). Note:
 *   Storage 7.22's createWriteStream() does not pass useAuthWithCustomEndpoint on to its upload,
 *   so without a `uri` it starts the session with no Authorization against a custom endpoint and
 *   is refused 401 here, as GCS would refuse it; createResumableUpload() does pass it. Start the
 *   session with createResumableUpload() and hand its URI to createWriteStream({ uri }): the URI is
 *   the session's credential (below);
 * - `new ImagesClient({ apiEndpoint: '127.0.0.1', port, keyFilename, fallback: true })` and
 *   `GlobalOperationsClient` alike (@google-cloud/compute 6, REST through google-gax's fallback:
 *   `https://127.0.0.1:<port>/compute/v1/...?$alt=json%3Benum-encoding=int`, numeric enums).
 *
 * TLS trust and the token endpoint (read this before pointing an SDK here):
 * - google-gax gives every REST call its own `https.Agent({ keepAlive: true })` and Storage takes
 *   no agent at all, so neither can be given a CA in-process. Run the SDK part in a child process
 *   with `env` (below) added to its environment: NODE_EXTRA_CA_CERTS=caFile (Node reads it only at
 *   start-up).
 * - Both SDKs ignore the key file's `token_uri`: google-auth-library's JWT client (through gtoken)
 *   always posts the service account's assertion to Google, https://www.googleapis.com/oauth2/v4/token
 *   (google-auth-library 9, used by Storage) or https://oauth2.googleapis.com/token (10, used by
 *   google-gax). `env` therefore also sets HTTPS_PROXY to this server, which answers CONNECT for
 *   exactly those two hosts (443) by serving its own token endpoint inside the tunnel (its
 *   certificate names them; CONNECT to any other host: 403), and NO_PROXY=127.0.0.1 so API calls
 *   go straight here. Without the proxy the SDKs would send the assertion to the real Google.
 *
 * OAuth (POST /token, and /oauth2/v4/token for the older library; form-encoded, errors in OAuth's
 * shape {"error","error_description"} with Google's texts where known):
 * - grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer (400 unsupported_grant_type);
 *   `assertion` required (400 invalid_request);
 * - the assertion is an RS256 JWT of the service account: `kid`, if present, = private_key_id and
 *   the signature verifies with the key made at start (else 400 invalid_grant "Invalid JWT
 *   Signature."), iss = client_email (400 invalid_grant "Invalid grant: account not found"), aud =
 *   token_uri or one of Google's two token URLs, exp ≤ iat + 3600 and not past, iat not ahead
 *   (400 invalid_grant "Invalid JWT: Token must be a short-lived token (60 minutes) and in a
 *   reasonable timeframe…"), `sub`, if present, = iss (no domain-wide delegation: 401
 *   unauthorized_client), a non-empty `scope` claim (400 invalid_scope "Invalid OAuth scope or ID
 *   token audience provided.", as Google answers rather than invalid_grant);
 * - answers {access_token "ya29.…", expires_in 3599, token_type "Bearer"}; the token remembers
 *   its scopes and expiry.
 *
 * Authentication of every Storage and Compute request: `Authorization: Bearer <t>` where t is an
 * unexpired token issued here, or a self-signed JWT (what google-auth-library sends instead of
 * asking the token endpoint, e.g. with no user scopes or in another universe): RS256 signed by the
 * service account's key, header `kid` = private_key_id, iss = sub = client_email, exp ≤ iat + 3600
 * and not past, and either a `scope` claim or aud = the service's URL (https://storage.googleapis.com/,
 * https://compute.googleapis.com/, or this server's url). Missing: 401 reason required; anything
 * else: 401 reason authError, with `WWW-Authenticate: Bearer realm="https://accounts.google.com/"`
 * (Compute: Google's ESF texts and status UNAUTHENTICATED; Storage: "Anonymous caller does not have
 * storage.<permission> access…" / "Invalid Credentials"). Scopes: Storage reads need cloud-platform
 * (or .read-only) or a devstorage scope, writes cloud-platform, devstorage.full_control or
 * devstorage.read_write; Compute reads need cloud-platform (or .read-only), compute or
 * compute.readonly, writes cloud-platform or compute; else 403 insufficientPermissions "Request had
 * insufficient authentication scopes.". As in GCS, a resumable session URI is itself the
 * credential: a PUT to it may come without Authorization (one that has the header must pass).
 *
 * Errors are in Google's JSON shape {"error":{"code","message","errors":[{"message","domain":"global",
 * "reason"}],"status"}}; Compute errors carry `status` (INVALID_ARGUMENT, NOT_FOUND,
 * ALREADY_EXISTS…), Storage errors do not (GCS's JSON API has none). google-gax 5 over REST lets
 * gaxios reject a non-2xx answer before gax decodes it, so a Compute error reaches the caller as a
 * GaxiosError: `status`/`code` the HTTP status, `message` this JSON body as text.
 *
 * Cloud Storage JSON API (buckets given at start; any other: 404 notFound "The specified bucket
 * does not exist."; object data as files under `dir`, never in memory):
 * - POST /upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=… (other uploadTypes: 501);
 *   the name may instead be in the JSON body, and both must agree (400 invalid, wording of Google's
 *   storage-testbench); name 1–1024 bytes of UTF-8 without CR/LF; the body is object metadata:
 *   known keys only (400 invalid), `metadata` a map of strings, contentType from the body or the
 *   X-Upload-Content-Type header (else application/octet-stream); X-Upload-Content-Length, if
 *   given, must be the final size. `ifGenerationMatch` (0 = the object must not exist) and
 *   `ifGenerationNotMatch` are checked here and again when the object is written (412
 *   conditionNotMet "At least one of the pre-conditions you specified did not hold."). Answers 200
 *   with `Location: <url>/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=…&upload_id=…`.
 * - PUT (or POST) to that URI with `Content-Range`:
 *   `bytes a-b/total` or `bytes a-b/*` (a chunk), `bytes a-*\/total` or `bytes a-*\/*` (the rest of
 *   the object in one body: what Storage sends without chunkSize), `bytes *\/total` or `bytes *\/*`
 *   (a status query; `*\/total` with every byte received completes the object), or none (the
 *   whole object). A chunk may start before the received offset (the overlap is dropped, as GCS
 *   does) but not after it: 503 text/plain "Invalid request.  According to the Content-Range
 *   header, the upload offset is X byte(s), which exceeds already uploaded size of Y byte(s)."
 *   (GCS's body, double space included; Storage retries it after a status query). Of a non-final
 *   request only whole 256 KiB units are kept (as Google's upload server does: the Range header
 *   then tells the client to resend the rest); a body cut short keeps the whole 256 KiB units it
 *   delivered. The body must have b-a+1 bytes and a known total must not be exceeded (400). While
 *   incomplete: 308 with `Range: bytes=0-N` (no Range header when nothing is kept). The final
 *   request writes the object: md5Hash (base64 MD5) and crc32c (base64 of the big-endian CRC-32C,
 *   Castagnoli) over the whole object, an `X-Goog-Hash` header's crc32c/md5 must match them (400
 *   invalid); answers 200 with the object resource (kind storage#object, id, selfLink, mediaLink,
 *   name, bucket, generation, metageneration, contentType, storageClass, size as a string,
 *   md5Hash, crc32c, etag, timeCreated, updated, metadata). Any request after completion answers
 *   200 with the object. Unknown upload_id, or a session expired by `expireSessions()`: 404
 *   notFound (GCS answers 404 for an expired session; 410 is for sessions that died otherwise).
 * - GET /storage/v1/b/{bucket}; GET /storage/v1/b/{bucket}/o (prefix, delimiter, maxResults,
 *   pageToken; items sorted by name); GET /storage/v1/b/{bucket}/o/{object} (URL-encoded name;
 *   alt=media gives the bytes) → 404 notFound "No such object: b/o"; DELETE (ifGenerationMatch) →
 *   204. Other methods and paths: 501. Unknown query parameters are ignored.
 *
 * Compute Engine v1, under /compute/v1/projects/{project}/ (another project: 404 notFound "The
 * resource 'projects/x' was not found", as Google answers for a project it cannot find; Google
 * answers 403 forbidden for an existing project the caller may not use):
 * - routes, request messages and body fields come from the SDK's own API description
 *   (@google-cloud/compute build/protos/protos.json, `(google.api.http)` rules of the Images and
 *   GlobalOperations services); served: images insert, get, list, getFromFamily, deprecate,
 *   delete; globalOperations get and wait. Other RPCs: 501.
 * - query parameters: the request message's fields (json or proto name) and Google's system
 *   parameters ($alt, alt, $prettyPrint, prettyPrint, fields, key, quotaUser, userIp,
 *   $.xgafv), else 400 'Invalid JSON payload received. Unknown name "x": Cannot bind query
 *   parameter. Field 'x' could not be found in request message.'; numbers and booleans typed;
 *   `$alt=json;enum-encoding=int` (which google-gax always sends) makes real enum fields
 *   (Operation.status) numbers in the answer.
 * - bodies are checked against the messages (Image, RawDisk, GuestOsFeature, DeprecationStatus…):
 *   unknown fields 400 'Invalid JSON payload received. Unknown name "x" at 'resource.raw_disk':
 *   Cannot find field.', values of the wrong JSON type 400 "Invalid value at 'resource.x'
 *   (TYPE_…)…"; string fields backed by an enum of the same name (GuestOsFeature.type,
 *   DeprecationStatus.state, Image.architecture, RawDisk.containerType, Image.sourceType) must
 *   be one of its values, by name or number (UNDEFINED_* refused): 400 invalid "Invalid value for
 *   field 'resource.guestOsFeatures[0].type': 'X'…". Output-only Image fields in a request are
 *   ignored, as Google does (kind, id, creationTimestamp, selfLink, status, deprecated,
 *   labelFingerprint, satisfiesPz*, source*Id, archiveSizeBytes, diskSizeGb); the other image
 *   sources, encryption keys, shieldedInstanceInitialState, params, enableConfidentialCompute and
 *   any field not named here are refused with 501 rather than faked; licenses are kept and shown.
 * - POST global/images: requestId, if given, a UUID other than the zero UUID (400 invalid); a
 *   repeated requestId answers the original operation. name required and
 *   `[a-z]([-a-z0-9]{0,61}[a-z0-9])?` (400 invalid "Invalid value for field 'resource.name': 'x'.
 *   Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"), family the same; labels
 *   ≤ 64, a key a lowercase letter then up to 62 lowercase letters, digits, _ or -, a value up to
 *   63 of those (international lowercase letters allowed, as Google documents; Google's "Label
 *   value 'X' violates format constraints…" messages); storageLocations names of the form of a
 *   multi-region (us), dual-region (nam4) or region (europe-west1); rawDisk.source
 *   required, `https://storage.googleapis.com/<bucket>/<object>` (the only Cloud Storage form the
 *   API documents: gs:// and other hosts are rewritten by gcloud, not the API, so they are 400
 *   here) of an object that exists in this stand-in's storage (404 notFound "The resource
 *   'https://www.googleapis.com/storage/v1/b/B/o/O' of type 'Google Cloud Storage object' was not
 *   found."), rawDisk.containerType TAR if given; name already used: 409 alreadyExists "The
 *   resource 'projects/P/global/images/N' already exists". Answers an Operation (kind
 *   compute#operation, id, name operation-…, operationType insert, targetLink, targetId,
 *   selfLink, status PENDING, progress 0, insertTime, user = client_email, …). The image exists
 *   at once with status PENDING.
 * - operations advance only when polled: GET global/operations/{op} and POST …/{op}/wait (op =
 *   name or numeric id, as Compute documents) answer RUNNING for the first `pollsBeforeDone` polls
 *   (default 2), then do the operation's work and answer DONE (with `error: {errors: [{code,
 *   message}]}`, httpErrorStatusCode 400 and httpErrorMessage BAD REQUEST when it failed).
 *   Unknown operation: 404 notFound.
 * - an insert's work reads the object as Compute does: a gzip'd tar whose only member is
 *   `disk.raw` (GNU sparse members fine; a PAX header counts as an extra member, as Compute
 *   treats it): else DONE with error INVALID_IMAGE_TAR "The tar archive is not a valid image."
 *   (Google's code and text) or "The file inside the tar archive was named 'x'. It should be named
 *   'disk.raw'." (Google's text); the object gone by then: the same code; disk.raw is extracted
 *   with Debian's `tar -xzf` into a fresh folder under `dir` and must be a whole number of GiB
 *   (else INVALID_IMAGE_TAR, stand-in wording). The image then records diskFile, diskSizeGb,
 *   archiveSizeBytes and is READY; on any error it is FAILED. `failNextInsert` makes the next
 *   insert's operation end with code IMAGE_CREATION_FAILED (stand-in's code) and that message.
 * - GET global/images/{name} → the image, 404 notFound "The resource 'projects/P/global/images/N'
 *   was not found"; GET global/images: `filter` with terms `field = value`, `field != value`,
 *   `field:*`, `field eq regex`, `field ne regex` (values bare, "double" or 'single' quoted; fields
 *   like name, family, status, labels.<key>, deprecated.state), terms ANDed (space or AND,
 *   parentheses optional; OR is 501; an unknown field 400), `maxResults` 0–500 (default 500),
 *   `pageToken`/nextPageToken, `orderBy` name or "creationTimestamp desc"; items sorted by name;
 *   GET global/images/family/{family} → the newest READY image of the family whose deprecation
 *   state is absent or ACTIVE (404 "The resource 'projects/P/global/images/family/F' was not
 *   found").
 * - POST global/images/{name}/deprecate with a DeprecationStatus: state required (ACTIVE,
 *   DEPRECATED, OBSOLETE, DELETED); deprecated/obsolete/deleted RFC 3339 timestamps; replacement,
 *   if given, an existing image's URL (full https://www.googleapis.com/… or
 *   https://compute.googleapis.com/… URL, this server's, or projects/P/global/images/N or
 *   global/images/N), else 400 invalid "…The referenced image resource cannot be found."; ACTIVE
 *   with no dates clears the deprecation. DELETE global/images/{name} shows the image DELETING
 *   and removes it when the operation is DONE. Both answer an Operation and take effect when it is
 *   DONE; on an image that is PENDING or DELETING: 400 resourceNotReady "The resource
 *   'projects/P/global/images/N' is not ready".
 * - selfLinks and targetLinks have Google's form (https://www.googleapis.com/compute/v1/projects/…).
 *
 * Assumed, not verified against the live APIs (the texts above marked as the stand-in's, the
 * 404 body of an unknown upload session, the 501s, which Storage body keys are accepted, the
 * timing of deprecate taking effect at DONE rather than at once, creationTimestamp in UTC).
 * Not implemented: multipart/media uploads, object rewrite/compose/patch, ACLs, IAM (any valid
 * credential may do anything its scopes allow), quotas, object versioning, the Artifact Registry
 * and non-TAR image sources, a minimum disk size.
 */
import { createHash, createSign, createVerify, generateKeyPair, randomBytes, type KeyObject } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';
import { CRC32C } from '@google-cloud/storage';
import { exec, output } from '../../src/exec.js';
import { readBody } from './http-body.js';

const jsonBody = (req: IncomingMessage) => readBody(req, MAX_JSON_BODY, () => new GoogleApiError(413, 'uploadTooLarge', 'The request body is too large.'));

// ---------------------------------------------------------------------------------------------
// The interface

export interface GceStandinOptions {
  dir: string;
  /** The one project (default kiln-test). */
  project?: string;
  /** Cloud Storage buckets that exist (default ['kiln-images']). */
  buckets?: string[];
  /** Operation polls answered RUNNING before an operation is done (default 2). */
  pollsBeforeDone?: number;
  /** The next images.insert operation ends DONE with this error message. */
  failNextInsert?: string;
}

export interface GceImage {
  name: string;
  status: 'PENDING' | 'READY' | 'FAILED';
  family?: string;
  description?: string;
  labels: Record<string, string>;
  guestOsFeatures: string[];
  architecture?: string;
  storageLocations?: string[];
  source: string;
  /** The extracted disk.raw on disk ('' until the image is READY). */
  diskFile: string;
  diskSizeGb: number;
  archiveSizeBytes: number;
  deprecated?: { state: string; replacement?: string; deprecated?: string; deleted?: string; obsolete?: string };
  creationTimestamp: string;
  id: string;
  selfLink: string;
  /** True while a delete operation is under way (the API shows status DELETING). */
  deleting: boolean;
}

export interface GceObject {
  bucket: string; name: string; size: number; md5Hash: string; crc32c: string; generation: string;
  metadata: Record<string, string>;
  /** The object's bytes on disk. */
  file: string;
  contentType: string;
}

export interface GceUploadSession {
  uri: string; bucket: string; name: string;
  /** Bytes kept so far. */
  received: number;
  state: 'open' | 'complete' | 'expired';
}

export interface GceStandin {
  /** https://127.0.0.1:<port>: token endpoint, Storage and Compute on this one server. */
  url: string;
  /** PEM of the self-signed certificate. */
  caFile: string;
  /** A service-account JSON key (RSA key made at start), mode 0600. */
  credentialsFile: string;
  project: string;
  /** The service account's email (client_email in credentialsFile). */
  clientEmail: string;
  /**
   * Environment for a child process that runs the SDKs: NODE_EXTRA_CA_CERTS (trust caFile),
   * HTTPS_PROXY (Google's token hosts tunnelled here, see the header) and NO_PROXY/no_proxy.
   */
  env: Record<string, string>;
  /** Every request, in order; CONNECT tunnels as method CONNECT, path host:port. */
  requests: { method: string; path: string; status: number }[];
  /** Every refusal, with Google's reason (OAuth: the `error`) and message. */
  rejected: { method: string; path: string; status: number; reason: string; message: string }[];
  objects(): GceObject[];
  images(): GceImage[];
  /** The private key PEM and every access token issued: must never appear in logs. */
  secrets(): string[];
  uploadSessions(): GceUploadSession[];
  /** Every open resumable session now answers 404, as an expired one does. */
  expireSessions(): void;
  /** The next images.insert operation ends DONE with this error message. */
  failNextInsert(message: string): void;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Constants

const KIB = 1024;
const GIB = 1024 * 1024 * KIB;
/** Non-final resumable requests are kept in whole units of this size. */
const UPLOAD_UNIT = 256 * KIB;
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** The hosts google-auth-library posts assertions to, whatever the key file says (see the header). */
export const GOOGLE_TOKEN_HOSTS = ['oauth2.googleapis.com', 'www.googleapis.com'] as const;
const TOKEN_PATHS = ['/token', '/oauth2/v4/token'];
const GOOGLE_TOKEN_URLS = ['https://oauth2.googleapis.com/token', 'https://www.googleapis.com/oauth2/v4/token'];
const TOKEN_LIFETIME_S = 3599;
const CLOCK_SKEW_S = 300;
const COMPUTE_LINK = 'https://www.googleapis.com/compute/v1';
const STORAGE_LINK = 'https://www.googleapis.com/storage/v1';
const STORAGE_SOURCE = 'https://storage.googleapis.com/';
const SERVICE_AUDIENCES = { storage: 'https://storage.googleapis.com', compute: 'https://compute.googleapis.com' } as const;
const SCOPE = (s: string): string => `https://www.googleapis.com/auth/${s}`;
const SCOPES_FOR = {
  storage: {
    read: ['cloud-platform', 'cloud-platform.read-only', 'devstorage.full_control', 'devstorage.read_write', 'devstorage.read_only'].map(SCOPE),
    write: ['cloud-platform', 'devstorage.full_control', 'devstorage.read_write'].map(SCOPE),
  },
  compute: {
    read: ['cloud-platform', 'cloud-platform.read-only', 'compute', 'compute.readonly'].map(SCOPE),
    write: ['cloud-platform', 'compute'].map(SCOPE),
  },
} as const;
const NAME = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const NAME_REGEX_TEXT = '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)';
const LABEL_KEY = /^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$/u;
const LABEL_VALUE = /^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$/u;
const MAX_LABELS = 64;
const STORAGE_LOCATION = /^(?:[a-z]+\d*|[a-z]+-[a-z]+\d+)$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;
const MAX_JSON_BODY = 4 * 1024 * KIB;
const SYSTEM_QUERY = new Set(['$alt', 'alt', '$prettyPrint', 'prettyPrint', 'fields', '$fields', 'key', 'quotaUser', 'userIp', '$.xgafv']);
/** Writable object fields of a resumable upload's metadata body. */
const OBJECT_METADATA_KEYS = new Set(['name', 'bucket', 'contentType', 'contentEncoding', 'contentDisposition', 'contentLanguage', 'cacheControl',
  'metadata', 'crc32c', 'md5Hash', 'storageClass', 'customTime', 'temporaryHold', 'eventBasedHold', 'kmsKeyName']);
/** Image fields an insert takes. */
const IMAGE_FIELDS = new Set(['name', 'description', 'family', 'labels', 'guestOsFeatures', 'architecture', 'storageLocations', 'rawDisk', 'licenses', 'sourceType']);
/** Image fields Google treats as output only: ignored in a request. */
const IMAGE_OUTPUT_ONLY = new Set(['kind', 'id', 'creationTimestamp', 'selfLink', 'status', 'deprecated', 'labelFingerprint', 'satisfiesPzs',
  'satisfiesPzi', 'sourceDiskId', 'sourceImageId', 'sourceSnapshotId', 'archiveSizeBytes', 'diskSizeGb', 'licenseCodes']);
/** Image fields the stand-in does not implement: refused with 501. */
const IMAGE_NOT_IMPLEMENTED = ['sourceDisk', 'sourceImage', 'sourceSnapshot', 'sourceDiskEncryptionKey', 'sourceImageEncryptionKey',
  'sourceSnapshotEncryptionKey', 'imageEncryptionKey', 'shieldedInstanceInitialState', 'params', 'enableConfidentialCompute'];
/** The RPCs served, by service. */
const SERVED_RPCS: Record<string, string[]> = { Images: ['Insert', 'Get', 'List', 'GetFromFamily', 'Deprecate', 'Delete'], GlobalOperations: ['Get', 'Wait'] };

// ---------------------------------------------------------------------------------------------
// Errors

type Api = 'storage' | 'compute';
const GRPC_STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND', 409: 'ALREADY_EXISTS',
  412: 'FAILED_PRECONDITION', 500: 'INTERNAL', 501: 'UNIMPLEMENTED', 503: 'UNAVAILABLE',
};

interface ErrorOptions {
  /** errors[0].message when it differs from the top-level message. */
  itemMessage?: string;
  location?: { location: string; locationType: string };
  headers?: Record<string, string>;
  details?: Record<string, unknown>[];
  /** Answer the message as text/plain (GCS's upload offset gap). */
  plain?: boolean;
}

class GoogleApiError extends Error {
  constructor(readonly status: number, readonly reason: string, message: string, readonly opts: ErrorOptions = {}) { super(message); }
}

class OAuthError extends Error {
  constructor(readonly status: number, readonly error: string, message: string) { super(message); }
}

const invalid = (message: string): GoogleApiError => new GoogleApiError(400, 'invalid', message);
const notImplemented = (what: string): GoogleApiError =>
  new GoogleApiError(501, 'notImplemented', `The GCE stand-in does not implement ${what}.`);
const invalidField = (field: string, value: unknown, why: string): GoogleApiError =>
  invalid(`Invalid value for field '${field}': '${typeof value === 'string' ? value : JSON.stringify(value)}'. ${why}`);
/** A JSON-level refusal as Google's front end (ESF) words it, with its BadRequest detail. */
function payloadError(message: string, field: string): GoogleApiError {
  return new GoogleApiError(400, 'invalid', message, {
    details: [{ '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field, description: message }] }],
  });
}

// ---------------------------------------------------------------------------------------------
// The Compute API description shipped with the SDK

interface ProtoField { type: string; rule?: string; keyType?: string }
interface ProtoNode {
  fields?: Record<string, ProtoField>;
  values?: Record<string, number>;
  nested?: Record<string, ProtoNode>;
  methods?: Record<string, { requestType: string; responseType: string; options?: Record<string, unknown> }>;
}

interface Route {
  service: string; rpc: string; method: string; pattern: RegExp; params: string[];
  requestType: string; body?: string;
}

const SCALAR_TYPES: Record<string, string> = {
  string: 'TYPE_STRING', bool: 'TYPE_BOOL', int32: 'TYPE_INT32', uint32: 'TYPE_UINT32', int64: 'TYPE_INT64', uint64: 'TYPE_UINT64',
  double: 'TYPE_DOUBLE', float: 'TYPE_FLOAT', bytes: 'TYPE_BYTES',
};

const snake = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camel = (name: string): string => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const pascal = (name: string): string => name[0]!.toUpperCase() + name.slice(1);

class ComputeModel {
  readonly v1: Record<string, ProtoNode>;
  readonly routes: Route[] = [];

  constructor() {
    const require = createRequire(import.meta.url);
    const file = join(dirname(require.resolve('@google-cloud/compute')), '..', 'protos', 'protos.json');
    const root = JSON.parse(readFileSync(file, 'utf8')) as ProtoNode;
    const v1 = root.nested?.['google']?.nested?.['cloud']?.nested?.['compute']?.nested?.['v1']?.nested;
    if (!v1) throw new Error(`gce stand-in: no google.cloud.compute.v1 in ${file}`);
    this.v1 = v1;
    for (const service of Object.keys(SERVED_RPCS)) {
      for (const [rpc, m] of Object.entries(v1[service]?.methods ?? {})) {
        const opts = m.options ?? {};
        const method = ['get', 'post', 'put', 'patch', 'delete'].find((v) => typeof opts[`(google.api.http).${v}`] === 'string');
        if (!method) continue;
        const template = opts[`(google.api.http).${method}`] as string;
        const params: string[] = [];
        const source = template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{([a-z_]+)\}/g, (_, p: string) => { params.push(camel(p)); return '([^/]+)'; });
        const body = opts['(google.api.http).body'];
        this.routes.push({
          service, rpc, method: method.toUpperCase(), pattern: new RegExp(`^${source}$`), params, requestType: m.requestType,
          ...(typeof body === 'string' ? { body: camel(body) } : {}),
        });
      }
    }
  }

  message(name: string): ProtoNode {
    const m = this.v1[name];
    if (!m?.fields) throw new Error(`gce stand-in: ${name} is not a message of compute v1`);
    return m;
  }

  /** The enum a field's type names (Operation.status: Status), or the same-named enum behind a string field (GuestOsFeature.type: Type). */
  enumOf(message: ProtoNode, field: string, type: string): Record<string, number> | undefined {
    if (type !== 'string') return message.nested?.[type]?.values ?? this.v1[type]?.values;
    return message.nested?.[pascal(field)]?.values;
  }

  /**
   * Checks a JSON value against a message; returns it with enum numbers replaced by names.
   * `at` is the proto (snake_case) path ESF names in JSON errors, `jsonAt` the json path Compute
   * names in its own.
   */
  check(typeName: string, value: unknown, at: string, jsonAt: string): Record<string, unknown> {
    const message = this.message(typeName);
    if (!isObj(value)) throw payloadError(`Invalid value at '${at}' (type.googleapis.com/google.cloud.compute.v1.${typeName}), ${JSON.stringify(value)}`, at);
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value)) {
      const name = message.fields![key] ? key : camel(key);
      const field = message.fields![name];
      if (!field) throw payloadError(`Invalid JSON payload received. Unknown name ${JSON.stringify(key)} at '${at}': Cannot find field.`, at);
      if (v === null) continue;
      out[name] = this.checkField(message, name, field, v, `${at}.${snake(name)}`, `${jsonAt}.${name}`);
    }
    return out;
  }

  private checkField(message: ProtoNode, name: string, field: ProtoField, v: unknown, at: string, jsonAt: string): unknown {
    if (field.keyType) {
      if (!isObj(v)) throw payloadError(`Invalid value at '${at}' (map), ${JSON.stringify(v)}`, at);
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, this.checkValue(message, name, field.type, x, `${at}[${JSON.stringify(k)}]`, `${jsonAt}.${k}`)]));
    }
    if (field.rule === 'repeated') {
      if (!Array.isArray(v)) throw payloadError(`Invalid value at '${at}' (${SCALAR_TYPES[field.type] ?? 'TYPE_MESSAGE'}), ${JSON.stringify(v)}`, at);
      return v.map((x: unknown, i) => this.checkValue(message, name, field.type, x, `${at}[${i}]`, `${jsonAt}[${i}]`));
    }
    return this.checkValue(message, name, field.type, v, at, jsonAt);
  }

  private checkValue(message: ProtoNode, name: string, type: string, v: unknown, at: string, jsonAt: string): unknown {
    const values = this.enumOf(message, name, type);
    if (values) {
      const byNumber = Object.entries(values).find(([, n]) => String(n) === String(v))?.[0];
      const literal = typeof v === 'string' && values[v] !== undefined ? v : byNumber;
      if (literal === undefined || literal.startsWith('UNDEFINED_')) {
        const allowed = Object.keys(values).filter((k) => !k.startsWith('UNDEFINED_')).sort();
        throw invalidField(jsonAt, v, `Must be one of [${allowed.join(', ')}].`);
      }
      return literal;
    }
    const wire = SCALAR_TYPES[type];
    if (!wire) return this.check(type, v, at, jsonAt);
    const ok = type === 'string' || type === 'bytes' ? typeof v === 'string'
      : type === 'bool' ? typeof v === 'boolean'
        : type === 'double' || type === 'float' ? typeof v === 'number' || (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)))
          : (typeof v === 'number' && Number.isInteger(v)) || (typeof v === 'string' && /^-?\d+$/.test(v));
    if (!ok) throw payloadError(`Invalid value at '${at}' (${wire}), ${JSON.stringify(v)}`, at);
    return v;
  }

  /** Query parameters a request message takes beyond its path parameters and body. */
  queryFields(route: Route): Map<string, ProtoField> {
    const fields = this.message(route.requestType).fields!;
    const out = new Map<string, ProtoField>();
    for (const [name, field] of Object.entries(fields)) {
      if (route.params.includes(name) || name === route.body) continue;
      out.set(name, field);
      out.set(snake(name), field);
    }
    return out;
  }
}

let model: ComputeModel | undefined;
const computeModel = (): ComputeModel => (model ??= new ComputeModel());

// ---------------------------------------------------------------------------------------------
// State

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const now = (): string => new Date().toISOString();
const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

interface ObjectRec extends GceObject { metageneration: string; timeCreated: string; storageClass: string }
interface BucketRec { name: string; timeCreated: string; objects: Map<string, ObjectRec> }
interface SessionRec {
  id: string; uri: string; bucket: string; name: string; file: string; received: number; state: GceUploadSession['state'];
  contentType: string; metadata: Record<string, string>; declaredSize?: number;
  ifGenerationMatch?: string; ifGenerationNotMatch?: string;
  object?: ObjectRec;
  /** Requests on one session run one at a time. */
  queue: Promise<void>;
}
interface ImageRec extends GceImage {
  seq: number;
  licenses: string[];
  sourceObject: { bucket: string; name: string };
  /** Id of the operation under way on the image, if any. */
  busy?: string;
}
interface OperationError { code: string; message: string }
interface OperationRec {
  id: string; name: string; type: 'insert' | 'deprecate' | 'delete'; targetLink: string; targetId: string;
  insertTime: string; startTime?: string; endTime?: string; status: 'PENDING' | 'RUNNING' | 'DONE'; progress: number; polls: number;
  work: () => Promise<OperationError | undefined>; finishing?: Promise<void>; error?: OperationError;
}
interface Principal { scopes?: ReadonlySet<string>; audience?: string }
interface TokenRec { expiresAt: number; scopes: ReadonlySet<string> }

// ---------------------------------------------------------------------------------------------
// The server

class GceStandinServer implements GceStandin {
  url = '';
  readonly caFile: string;
  readonly credentialsFile: string;
  readonly project: string;
  readonly clientEmail: string;
  env: Record<string, string> = {};
  readonly requests: GceStandin['requests'] = [];
  readonly rejected: GceStandin['rejected'] = [];

  private server!: Server;
  private readonly sockets = new Set<Socket>();
  private privateKeyPem = '';
  private publicKey!: KeyObject;
  private readonly privateKeyId = randomBytes(20).toString('hex');
  private readonly clientId = String(100_000_000_000_000_000_000n + BigInt(`0x${randomBytes(8).toString('hex')}`));
  private readonly tokens = new Map<string, TokenRec>();
  private readonly buckets = new Map<string, BucketRec>();
  private readonly sessions = new Map<string, SessionRec>();
  private readonly imageMap = new Map<string, ImageRec>();
  private readonly operations = new Map<string, OperationRec>();
  private readonly requestIds = new Map<string, OperationRec>();
  private readonly pollsBeforeDone: number;
  private nextInsertFailure: string | undefined;
  private seq = 0;
  private lastGeneration = 0;

  constructor(private readonly opts: GceStandinOptions) {
    this.project = opts.project ?? 'kiln-test';
    if (!NAME.test(this.project)) throw new Error(`gce stand-in: project ${this.project} is not a valid project id`);
    this.clientEmail = `kiln-standin@${this.project}.iam.gserviceaccount.com`;
    this.caFile = join(opts.dir, 'gce-standin-cert.pem');
    this.credentialsFile = join(opts.dir, 'gce-standin-service-account.json');
    this.pollsBeforeDone = opts.pollsBeforeDone ?? 2;
    if (!Number.isInteger(this.pollsBeforeDone) || this.pollsBeforeDone < 0) throw new Error('gce stand-in: pollsBeforeDone must be an integer ≥ 0');
    this.nextInsertFailure = opts.failNextInsert;
    for (const name of opts.buckets ?? ['kiln-images']) this.buckets.set(name, { name, timeCreated: now(), objects: new Map() });
  }

  async listen(): Promise<void> {
    await mkdir(join(this.opts.dir, 'gcs-objects'), { recursive: true });
    await mkdir(join(this.opts.dir, 'gcs-sessions'), { recursive: true });
    await mkdir(join(this.opts.dir, 'gce-images'), { recursive: true });
    const keyFile = join(this.opts.dir, 'gce-standin-key.pem');
    // The service account's key and the server's certificate, made side by side.
    const [serviceAccount] = await Promise.all([
      promisify(generateKeyPair)('rsa', { modulusLength: 2048 }),
      output('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1',
        '-addext', `subjectAltName=IP:127.0.0.1,${GOOGLE_TOKEN_HOSTS.map((h) => `DNS:${h}`).join(',')}`,
        '-days', '2', '-keyout', keyFile, '-out', this.caFile,
      ]),
    ]);
    this.privateKeyPem = serviceAccount.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    this.publicKey = serviceAccount.publicKey;
    await chmod(keyFile, 0o600);
    const [key, cert] = await Promise.all([readFile(keyFile), readFile(this.caFile)]);
    this.server = createServer({ key, cert }, (req, res) => { void this.handle(req, res); });
    // Google's front ends keep idle connections far longer than Node's 5 s default; with 5 s a client
    // reusing a connection the server is closing at that moment sees ECONNRESET.
    this.server.keepAliveTimeout = 120_000;
    this.server.on('connection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)); });
    this.server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => this.tunnel(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    this.env = { NODE_EXTRA_CA_CERTS: this.caFile, HTTPS_PROXY: this.url, NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost' };
    await writeFile(this.credentialsFile, `${JSON.stringify({
      type: 'service_account', project_id: this.project, private_key_id: this.privateKeyId, private_key: this.privateKeyPem,
      client_email: this.clientEmail, client_id: this.clientId,
      auth_uri: 'https://accounts.google.com/o/oauth2/auth', token_uri: `${this.url}/token`,
      auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
      client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(this.clientEmail)}`,
      universe_domain: 'googleapis.com',
    }, null, 2)}\n`, { mode: 0o600 });
    await chmod(this.credentialsFile, 0o600);
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  // --- test helpers ---------------------------------------------------------------------------

  objects(): GceObject[] {
    return [...this.buckets.values()].flatMap((b) => [...b.objects.values()]).map((o) => ({
      bucket: o.bucket, name: o.name, size: o.size, md5Hash: o.md5Hash, crc32c: o.crc32c, generation: o.generation,
      metadata: { ...o.metadata }, file: o.file, contentType: o.contentType,
    }));
  }

  images(): GceImage[] {
    return [...this.imageMap.values()].sort((a, b) => a.seq - b.seq).map((i) => ({
      name: i.name, status: i.status, labels: { ...i.labels }, guestOsFeatures: [...i.guestOsFeatures],
      source: i.source, diskFile: i.diskFile, diskSizeGb: i.diskSizeGb, archiveSizeBytes: i.archiveSizeBytes,
      creationTimestamp: i.creationTimestamp, id: i.id, selfLink: i.selfLink, deleting: i.deleting,
      ...(i.family !== undefined ? { family: i.family } : {}), ...(i.description !== undefined ? { description: i.description } : {}),
      ...(i.architecture !== undefined ? { architecture: i.architecture } : {}),
      ...(i.storageLocations !== undefined ? { storageLocations: [...i.storageLocations] } : {}),
      ...(i.deprecated ? { deprecated: { ...i.deprecated } } : {}),
    }));
  }

  secrets(): string[] { return [this.privateKeyPem, ...this.tokens.keys()]; }

  uploadSessions(): GceUploadSession[] {
    return [...this.sessions.values()].map((s) => ({ uri: s.uri, bucket: s.bucket, name: s.name, received: s.received, state: s.state }));
  }

  expireSessions(): void {
    for (const s of this.sessions.values()) if (s.state === 'open') s.state = 'expired';
  }

  failNextInsert(message: string): void { this.nextInsertFailure = message; }

  // --- HTTP -----------------------------------------------------------------------------------

  /** CONNECT through this server as HTTPS_PROXY: only Google's token hosts, served here. */
  private tunnel(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const target = req.url ?? '';
    const [host, port] = target.split(':');
    const allowed = port === '443' && (GOOGLE_TOKEN_HOSTS as readonly string[]).includes(host ?? '');
    this.requests.push({ method: 'CONNECT', path: target, status: allowed ? 200 : 403 });
    if (!allowed) {
      this.rejected.push({ method: 'CONNECT', path: target, status: 403, reason: 'forbidden', message: `the GCE stand-in tunnels only ${GOOGLE_TOKEN_HOSTS.join(', ')}:443` });
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) socket.unshift(head);
    this.server.emit('connection', socket);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', this.url);
    const path = `${url.pathname}${url.search}`;
    res.once('close', () => this.requests.push({ method, path, status: res.headersSent ? res.statusCode : 0 }));
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    const api: Api | undefined = url.pathname.startsWith('/compute/') ? 'compute' : url.pathname.startsWith('/storage/') || url.pathname.startsWith('/upload/storage/') || url.pathname.startsWith('/download/storage/') ? 'storage' : undefined;
    try {
      if (TOKEN_PATHS.includes(url.pathname)) {
        await this.token(req, res, method);
      } else if ((GOOGLE_TOKEN_HOSTS as readonly string[]).includes(host)) {
        throw new GoogleApiError(404, 'notFound', `The GCE stand-in serves only the token endpoint (${TOKEN_PATHS.join(', ')}) through a tunnel to ${host}.`);
      } else if (api === 'storage') {
        await this.storage(req, res, method, url);
      } else if (api === 'compute') {
        await this.compute(req, res, method, url);
      } else {
        throw new GoogleApiError(404, 'notFound', `The GCE stand-in serves /token, /storage/v1, /upload/storage/v1 and /compute/v1, not ${method} ${url.pathname}.`);
      }
    } catch (e) {
      if (!res.headersSent) req.resume();
      this.fail(res, method, path, api, e);
    }
  }

  private fail(res: ServerResponse, method: string, path: string, api: Api | undefined, e: unknown): void {
    if (e instanceof OAuthError) {
      this.rejected.push({ method, path, status: e.status, reason: e.error, message: e.message });
      send(res, e.status, { error: e.error, error_description: e.message });
      return;
    }
    const err = e instanceof GoogleApiError ? e : new GoogleApiError(500, 'backendError', `gce stand-in bug: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    this.rejected.push({ method, path, status: err.status, reason: err.reason, message: err.message });
    if (err.opts.plain) {
      sendText(res, err.status, err.message, err.opts.headers);
      return;
    }
    const item = { message: err.opts.itemMessage ?? err.message, domain: 'global', reason: err.reason, ...(err.opts.location ?? {}) };
    send(res, err.status, {
      error: {
        code: err.status, message: err.message, errors: [item],
        ...(api === 'compute' && GRPC_STATUS[err.status] ? { status: GRPC_STATUS[err.status] } : {}),
        ...(api === 'compute' && err.opts.details ? { details: err.opts.details } : {}),
      },
    }, err.opts.headers);
  }

  // --- OAuth ----------------------------------------------------------------------------------

  private async token(req: IncomingMessage, res: ServerResponse, method: string): Promise<void> {
    if (method !== 'POST') throw new OAuthError(405, 'invalid_request', `The token endpoint takes POST, not ${method}.`);
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      req.resume();
      throw new OAuthError(400, 'invalid_request', 'The request body must be application/x-www-form-urlencoded.');
    }
    const form = new URLSearchParams((await jsonBody(req)).toString('utf8'));
    const grant = form.get('grant_type');
    if (grant !== JWT_BEARER) throw new OAuthError(400, 'unsupported_grant_type', `Invalid grant_type: ${grant ?? ''}`);
    const assertion = form.get('assertion');
    if (!assertion) throw new OAuthError(400, 'invalid_request', 'Missing required parameter: assertion');
    const { claims } = this.verifyJwt(assertion, (m) => new OAuthError(400, 'invalid_grant', m));
    if (claims['iss'] !== this.clientEmail) throw new OAuthError(400, 'invalid_grant', 'Invalid grant: account not found');
    const audiences = [...GOOGLE_TOKEN_URLS, `${this.url}/token`];
    if (typeof claims['aud'] !== 'string' || !audiences.includes(claims['aud'])) {
      throw new OAuthError(400, 'invalid_grant', `Invalid JWT: Failed audience check. The expected value was one of: ${audiences.join(', ')}.`);
    }
    if (claims['sub'] !== undefined && claims['sub'] !== claims['iss']) {
      throw new OAuthError(401, 'unauthorized_client', 'Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.');
    }
    if (claims['target_audience'] !== undefined) throw new OAuthError(400, 'invalid_request', 'The GCE stand-in does not issue ID tokens (target_audience).');
    const scope = typeof claims['scope'] === 'string' ? claims['scope'].split(' ').filter(Boolean) : [];
    if (scope.length === 0) throw new OAuthError(400, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
    const accessToken = `ya29.${b64url(randomBytes(96))}`;
    this.tokens.set(accessToken, { expiresAt: Date.now() + TOKEN_LIFETIME_S * 1000, scopes: new Set(scope) });
    send(res, 200, { access_token: accessToken, expires_in: TOKEN_LIFETIME_S, token_type: 'Bearer' }, { 'Cache-Control': 'no-cache, no-store, max-age=0, must-revalidate' });
  }

  /** Verifies an RS256 JWT of the service account (signature, kid if given, lifetime). */
  private verifyJwt(jwt: string, refuse: (message: string) => Error): { header: Obj; claims: Obj } {
    const parts = jwt.split('.');
    const decode = (s: string | undefined): unknown => {
      try { return JSON.parse(Buffer.from(s ?? '', 'base64url').toString('utf8')); } catch { return undefined; }
    };
    const header = decode(parts[0]);
    const claims = decode(parts[1]);
    if (parts.length !== 3 || !isObj(header) || !isObj(claims)) throw refuse('Invalid JWT: the token is not a signed JWT (header.claims.signature).');
    if (header['alg'] !== 'RS256') throw refuse(`Invalid JWT: alg must be RS256, not ${String(header['alg'])}.`);
    if (header['kid'] !== undefined && header['kid'] !== this.privateKeyId) throw refuse('Invalid JWT Signature.');
    const verifier = createVerify('RSA-SHA256');
    verifier.update(`${parts[0]}.${parts[1]}`);
    if (!verifier.verify(this.publicKey, Buffer.from(parts[2]!, 'base64url'))) throw refuse('Invalid JWT Signature.');
    const t = Math.floor(Date.now() / 1000);
    const { iat, exp } = claims;
    if (typeof iat !== 'number' || typeof exp !== 'number' || exp <= t || exp - iat > 3600 || iat > t + CLOCK_SKEW_S) {
      throw refuse('Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
    }
    return { header, claims };
  }

  /** The caller behind `Authorization`; throws 401/403 as the API would. */
  private authenticate(req: IncomingMessage, api: Api, write: boolean, permission: string): Principal {
    const realm = 'Bearer realm="https://accounts.google.com/"';
    const header = req.headers.authorization;
    if (!header) {
      const location = { location: 'Authorization', locationType: 'header' };
      if (api === 'storage') {
        throw new GoogleApiError(401, 'required', `Anonymous caller does not have ${permission} access to the Google Cloud Storage object. Permission '${permission}' denied on resource (or it may not exist).`, { location, headers: { 'WWW-Authenticate': realm } });
      }
      throw new GoogleApiError(401, 'required', 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.', { itemMessage: 'Login Required.', location, headers: { 'WWW-Authenticate': realm } });
    }
    const refuse = (): GoogleApiError => {
      const location = { location: 'Authorization', locationType: 'header' };
      const headers = { 'WWW-Authenticate': `${realm}, error="invalid_token"` };
      if (api === 'storage') return new GoogleApiError(401, 'authError', 'Invalid Credentials', { location, headers });
      return new GoogleApiError(401, 'authError', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.', { itemMessage: 'Invalid Credentials', location, headers });
    };
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw refuse();
    const presented = m[1]!;
    let principal: Principal;
    const issued = this.tokens.get(presented);
    if (issued) {
      if (issued.expiresAt <= Date.now()) throw refuse();
      principal = { scopes: issued.scopes };
    } else {
      let jwt: { header: Obj; claims: Obj };
      try { jwt = this.verifyJwt(presented, (msg) => new Error(msg)); } catch { throw refuse(); }
      const { header: jwtHeader, claims } = jwt;
      if (jwtHeader['kid'] !== this.privateKeyId || claims['iss'] !== this.clientEmail || claims['sub'] !== this.clientEmail) throw refuse();
      if (typeof claims['scope'] === 'string' && claims['scope'].trim()) {
        principal = { scopes: new Set(claims['scope'].split(' ').filter(Boolean)) };
      } else if (typeof claims['aud'] === 'string') {
        const aud = claims['aud'].replace(/\/$/, '');
        if (aud !== SERVICE_AUDIENCES[api] && aud !== this.url) throw refuse();
        principal = { audience: aud };
      } else {
        throw refuse();
      }
    }
    if (principal.scopes) {
      const needed: readonly string[] = SCOPES_FOR[api][write ? 'write' : 'read'];
      if (![...principal.scopes].some((s) => needed.includes(s))) {
        throw new GoogleApiError(403, 'insufficientPermissions', 'Request had insufficient authentication scopes.', {
          headers: { 'WWW-Authenticate': `Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="${needed.join(' ')}"` },
        });
      }
    }
    return principal;
  }

  // --- Cloud Storage --------------------------------------------------------------------------

  private bucket(name: string): BucketRec {
    const b = this.buckets.get(name);
    if (!b) throw new GoogleApiError(404, 'notFound', 'The specified bucket does not exist.');
    return b;
  }

  private async storage(req: IncomingMessage, res: ServerResponse, method: string, url: URL): Promise<void> {
    const raw = url.pathname;
    const upload = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(raw);
    if (upload) {
      const uploadId = url.searchParams.get('upload_id');
      if (uploadId !== null && (method === 'PUT' || method === 'POST')) {
        await this.uploadRequest(req, res, uploadId);
        return;
      }
      if (method !== 'POST') throw notImplemented(`${method} ${raw}`);
      this.authenticate(req, 'storage', true, 'storage.objects.create');
      await this.startUpload(req, res, decodeURIComponent(upload[1]!), url);
      return;
    }
    const m = /^\/(?:download\/)?storage\/v1\/b\/([^/]+)(?:\/o(?:\/(.+))?)?$/.exec(raw);
    if (!m) throw notImplemented(`${method} ${raw}`);
    const bucketName = decodeURIComponent(m[1]!);
    const objectPart = m[2];
    const listing = objectPart === undefined && raw.endsWith('/o');
    const permission = objectPart === undefined ? (listing ? 'storage.objects.list' : 'storage.buckets.get') : method === 'DELETE' ? 'storage.objects.delete' : 'storage.objects.get';
    const write = method !== 'GET' && method !== 'HEAD';
    this.authenticate(req, 'storage', write, permission);
    const bucket = this.bucket(bucketName);
    req.resume();
    if (objectPart === undefined && !listing) {
      if (method !== 'GET') throw notImplemented(`${method} on buckets`);
      send(res, 200, this.bucketJson(bucket));
      return;
    }
    if (listing) {
      if (method !== 'GET') throw notImplemented(`${method} ${raw} (only resumable uploads create objects)`);
      send(res, 200, this.listObjects(bucket, url.searchParams));
      return;
    }
    const name = decodeURIComponent(objectPart!);
    const obj = bucket.objects.get(name);
    if (!obj) throw new GoogleApiError(404, 'notFound', `No such object: ${bucket.name}/${name}`);
    if (method === 'GET') {
      if (url.searchParams.get('alt') === 'media') {
        res.writeHead(200, { 'Content-Type': obj.contentType, 'Content-Length': obj.size, 'X-Goog-Generation': obj.generation, 'X-Goog-Hash': `crc32c=${obj.crc32c},md5=${obj.md5Hash}` });
        await pipeline(createReadStream(obj.file), res);
        return;
      }
      send(res, 200, this.objectJson(obj));
      return;
    }
    if (method === 'DELETE') {
      this.preconditions(obj, url.searchParams.get('ifGenerationMatch') ?? undefined, url.searchParams.get('ifGenerationNotMatch') ?? undefined);
      bucket.objects.delete(name);
      await rm(obj.file, { force: true });
      res.writeHead(204, { 'Content-Length': 0 });
      res.end();
      return;
    }
    throw notImplemented(`${method} on objects (patch, rewrite, compose)`);
  }

  private preconditions(existing: ObjectRec | undefined, ifGenerationMatch: string | undefined, ifGenerationNotMatch: string | undefined): void {
    const generation = existing?.generation ?? '0';
    const failed = (ifGenerationMatch !== undefined && ifGenerationMatch !== generation)
      || (ifGenerationNotMatch !== undefined && ifGenerationNotMatch === generation);
    if (failed) {
      throw new GoogleApiError(412, 'conditionNotMet', 'At least one of the pre-conditions you specified did not hold.', { location: { location: 'If-Match', locationType: 'header' } });
    }
  }

  private async startUpload(req: IncomingMessage, res: ServerResponse, bucketName: string, url: URL): Promise<void> {
    const bucket = this.bucket(bucketName);
    const uploadType = url.searchParams.get('uploadType');
    if (uploadType !== 'resumable') throw notImplemented(`uploadType=${uploadType ?? '(none)'} (resumable uploads only)`);
    const raw = await jsonBody(req);
    let body: unknown = {};
    if (raw.length > 0) {
      try { body = JSON.parse(raw.toString('utf8')); } catch { throw invalid('Parse Error: the upload metadata is not JSON.'); }
    }
    if (!isObj(body)) throw invalid('The upload metadata must be a JSON object.');
    for (const key of Object.keys(body)) {
      if (!OBJECT_METADATA_KEYS.has(key)) throw invalid(`Invalid argument: the object resource has no writable field '${key}'.`);
    }
    const queryName = url.searchParams.get('name') ?? undefined;
    const bodyName = typeof body['name'] === 'string' ? body['name'] : undefined;
    if (queryName !== undefined && bodyName !== undefined && queryName !== bodyName) {
      throw invalid(`Value '${bodyName}' in content does not agree with value '${queryName}'.`);
    }
    const name = queryName ?? bodyName;
    if (!name) throw new GoogleApiError(400, 'required', 'Required');
    if (Buffer.byteLength(name) > 1024 || /[\r\n]/.test(name) || name === '.' || name === '..') throw invalid('The specified object name is not valid.');
    const metadata: Record<string, string> = {};
    if (body['metadata'] !== undefined && body['metadata'] !== null) {
      if (!isObj(body['metadata'])) throw invalid("Invalid argument: 'metadata' must be a map of strings.");
      for (const [k, v] of Object.entries(body['metadata'])) {
        if (typeof v !== 'string') throw invalid(`Invalid argument: metadata value of '${k}' must be a string.`);
        metadata[k] = v;
      }
    }
    const headerType = req.headers['x-upload-content-type'];
    const contentType = typeof body['contentType'] === 'string' ? body['contentType'] : typeof headerType === 'string' ? headerType : 'application/octet-stream';
    const lengthHeader = req.headers['x-upload-content-length'];
    const declaredSize = typeof lengthHeader === 'string' ? Number(lengthHeader) : undefined;
    if (declaredSize !== undefined && !(Number.isSafeInteger(declaredSize) && declaredSize >= 0)) throw invalid(`Invalid X-Upload-Content-Length: ${String(lengthHeader)}`);
    const ifGenerationMatch = url.searchParams.get('ifGenerationMatch') ?? undefined;
    const ifGenerationNotMatch = url.searchParams.get('ifGenerationNotMatch') ?? undefined;
    this.preconditions(bucket.objects.get(name), ifGenerationMatch, ifGenerationNotMatch);
    const id = `ABPtcP${b64url(randomBytes(36))}`;
    const uri = `${this.url}/upload/storage/v1/b/${encodeURIComponent(bucket.name)}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`;
    const file = join(this.opts.dir, 'gcs-sessions', id);
    await writeFile(file, '');
    this.sessions.set(id, {
      id, uri, bucket: bucket.name, name, file, received: 0, state: 'open', contentType, metadata, queue: Promise.resolve(),
      ...(declaredSize !== undefined ? { declaredSize } : {}),
      ...(ifGenerationMatch !== undefined ? { ifGenerationMatch } : {}), ...(ifGenerationNotMatch !== undefined ? { ifGenerationNotMatch } : {}),
    });
    res.writeHead(200, { Location: uri, 'X-GUploader-UploadID': id, 'Content-Length': 0 });
    res.end();
  }

  private async uploadRequest(req: IncomingMessage, res: ServerResponse, uploadId: string): Promise<void> {
    const session = this.sessions.get(uploadId);
    if (!session || session.state === 'expired') {
      throw new GoogleApiError(404, 'notFound', 'The requested upload session was not found; it may have expired. Start a new upload.');
    }
    if (req.headers.authorization) this.authenticate(req, 'storage', true, 'storage.objects.create');
    // One request at a time per session: a second waits for the first to settle.
    let release!: () => void;
    const previous = session.queue;
    session.queue = new Promise((r) => { release = r; });
    await previous;
    try {
      await this.uploadChunk(req, res, session);
    } finally {
      release();
    }
  }

  private async uploadChunk(req: IncomingMessage, res: ServerResponse, session: SessionRec): Promise<void> {
    if (session.object) {
      req.resume();
      send(res, 200, this.objectJson(session.object));
      return;
    }
    const range = parseContentRange(req.headers['content-range']);
    if (range === 'bad') throw invalid(`Failed to parse Content-Range header: ${String(req.headers['content-range'])}`);
    const total = range.total ?? session.declaredSize;
    if (range.kind === 'query') {
      req.resume();
      if (total !== undefined && total === session.received) {
        await this.finishUpload(req, res, session);
        return;
      }
      this.incomplete(res, session);
      return;
    }
    const start = range.start;
    if (start > session.received) {
      req.resume();
      throw new GoogleApiError(503, 'backendError',
        `Invalid request.  According to the Content-Range header, the upload offset is ${start} byte(s), which exceeds already uploaded size of ${session.received} byte(s).`,
        { plain: true });
    }
    const expected = range.end === undefined ? undefined : range.end - start + 1;
    if (range.end !== undefined && total !== undefined && range.end >= total) throw invalid(`Content-Range ${String(req.headers['content-range'])} ends beyond the object's total size ${total}.`);
    const before = session.received;
    const skip = before - start;
    let seen = 0;
    let kept = 0;
    const sink = createWriteStream(session.file, { flags: 'a' });
    const dropOverlap = new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        const from = Math.max(0, skip - seen);
        seen += chunk.length;
        if (from < chunk.length) { kept += chunk.length - from; cb(null, from > 0 ? chunk.subarray(from) : chunk); } else cb();
      },
    });
    let cut = false;
    try { await pipeline(req, dropOverlap, sink); } catch { cut = true; }
    const final = range.final && !cut && (expected === undefined || seen === expected);
    if (!cut && expected !== undefined && seen !== expected) {
      await this.keep(session, before);
      throw invalid(`The request body has ${seen} byte(s) but Content-Range ${String(req.headers['content-range'])} names ${expected}.`);
    }
    const received = before + kept;
    if (final) {
      if (total !== undefined && received !== total) {
        await this.keep(session, before);
        throw invalid(`The upload ends at ${received} byte(s), but its total size was given as ${total}.`);
      }
      session.received = received;
      await this.finishUpload(req, res, session);
      return;
    }
    // Google's upload server keeps whole 256 KiB units of a request that does not finish the object.
    await this.keep(session, Math.max(before, Math.floor(received / UPLOAD_UNIT) * UPLOAD_UNIT));
    if (cut) { res.destroy(); return; }
    this.incomplete(res, session);
  }

  private async keep(session: SessionRec, bytes: number): Promise<void> {
    await truncate(session.file, bytes);
    session.received = bytes;
  }

  private incomplete(res: ServerResponse, session: SessionRec): void {
    const headers: Record<string, string | number> = { 'Content-Length': 0, 'X-GUploader-UploadID': session.id };
    if (session.received > 0) headers['Range'] = `bytes=0-${session.received - 1}`;
    res.writeHead(308, headers);
    res.end();
  }

  private async finishUpload(req: IncomingMessage, res: ServerResponse, session: SessionRec): Promise<void> {
    const bucket = this.bucket(session.bucket);
    if (session.declaredSize !== undefined && session.declaredSize !== session.received) {
      throw invalid(`The upload has ${session.received} byte(s) but X-Upload-Content-Length was ${session.declaredSize}.`);
    }
    const { md5Hash, crc32c } = await hashFile(session.file);
    const claimed = parseGoogHash(req.headers['x-goog-hash']);
    if (claimed.crc32c !== undefined && claimed.crc32c !== crc32c) throw invalid(`Provided CRC32C "${claimed.crc32c}" doesn't match calculated CRC32C "${crc32c}".`);
    if (claimed.md5 !== undefined && claimed.md5 !== md5Hash) throw invalid(`Provided MD5 hash "${claimed.md5}" doesn't match calculated MD5 hash "${md5Hash}".`);
    const existing = bucket.objects.get(session.name);
    this.preconditions(existing, session.ifGenerationMatch, session.ifGenerationNotMatch);
    const generation = this.newGeneration();
    const file = join(this.opts.dir, 'gcs-objects', `${bucket.name}-${generation}`);
    await rename(session.file, file);
    if (existing) await rm(existing.file, { force: true });
    const t = now();
    const obj: ObjectRec = {
      bucket: bucket.name, name: session.name, size: session.received, md5Hash, crc32c, generation, metageneration: '1',
      metadata: session.metadata, file, contentType: session.contentType, timeCreated: t, storageClass: 'STANDARD',
    };
    bucket.objects.set(session.name, obj);
    session.object = obj;
    session.state = 'complete';
    send(res, 200, this.objectJson(obj));
  }

  private newGeneration(): string {
    this.lastGeneration = Math.max(this.lastGeneration + 1, Date.now() * 1000);
    return String(this.lastGeneration);
  }

  private objectJson(o: ObjectRec): Obj {
    const enc = encodeURIComponent(o.name);
    return {
      kind: 'storage#object', id: `${o.bucket}/${o.name}/${o.generation}`,
      selfLink: `${STORAGE_LINK}/b/${o.bucket}/o/${enc}`,
      mediaLink: `https://storage.googleapis.com/download/storage/v1/b/${o.bucket}/o/${enc}?generation=${o.generation}&alt=media`,
      name: o.name, bucket: o.bucket, generation: o.generation, metageneration: o.metageneration, contentType: o.contentType,
      storageClass: o.storageClass, size: String(o.size), md5Hash: o.md5Hash, crc32c: o.crc32c,
      etag: Buffer.from(o.generation).toString('base64'), timeCreated: o.timeCreated, updated: o.timeCreated,
      timeStorageClassUpdated: o.timeCreated, timeFinalized: o.timeCreated,
      ...(Object.keys(o.metadata).length ? { metadata: { ...o.metadata } } : {}),
    };
  }

  private bucketJson(b: BucketRec): Obj {
    return {
      kind: 'storage#bucket', selfLink: `${STORAGE_LINK}/b/${b.name}`, id: b.name, name: b.name, projectNumber: this.clientId.slice(0, 12),
      metageneration: '1', location: 'US', storageClass: 'STANDARD', etag: 'CAE=', timeCreated: b.timeCreated, updated: b.timeCreated,
      locationType: 'multi-region', iamConfiguration: { uniformBucketLevelAccess: { enabled: true }, publicAccessPrevention: 'enforced' },
    };
  }

  private listObjects(b: BucketRec, q: URLSearchParams): Obj {
    const prefix = q.get('prefix') ?? '';
    const delimiter = q.get('delimiter') ?? '';
    const max = q.has('maxResults') ? Number(q.get('maxResults')) : 1000;
    if (!Number.isInteger(max) || max < 1) throw invalid(`Invalid value for maxResults: ${q.get('maxResults') ?? ''}`);
    const offset = decodePageToken(q.get('pageToken'));
    const items: ObjectRec[] = [];
    const prefixes = new Set<string>();
    for (const o of [...b.objects.values()].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))) {
      if (!o.name.startsWith(prefix)) continue;
      const rest = o.name.slice(prefix.length);
      const cut = delimiter ? rest.indexOf(delimiter) : -1;
      if (cut >= 0) prefixes.add(prefix + rest.slice(0, cut + delimiter.length)); else items.push(o);
    }
    const page = items.slice(offset, offset + max);
    return {
      kind: 'storage#objects',
      ...(offset + max < items.length ? { nextPageToken: b64url(String(offset + max)) } : {}),
      ...(prefixes.size ? { prefixes: [...prefixes].sort() } : {}),
      ...(page.length ? { items: page.map((o) => this.objectJson(o)) } : {}),
    };
  }

  // --- Compute Engine -------------------------------------------------------------------------

  private async compute(req: IncomingMessage, res: ServerResponse, method: string, url: URL): Promise<void> {
    const m = computeModel();
    const route = m.routes.find((r) => r.method === method && r.pattern.test(url.pathname));
    if (!route) throw notImplemented(`${method} ${url.pathname}`);
    const values = route.pattern.exec(url.pathname)!.slice(1).map((v) => decodeURIComponent(v));
    const params = Object.fromEntries(route.params.map((p, i) => [p, values[i]!]));
    const rpc = `compute.${route.service[0]!.toLowerCase()}${route.service.slice(1)}.${route.rpc[0]!.toLowerCase()}${route.rpc.slice(1)}`;
    if (!SERVED_RPCS[route.service]!.includes(route.rpc)) throw notImplemented(rpc);
    const write = method !== 'GET';
    this.authenticate(req, 'compute', write, rpc);
    const project = params['project']!;
    if (project !== this.project) throw new GoogleApiError(404, 'notFound', `The resource 'projects/${project}' was not found`);
    const query = this.checkQuery(route, url.searchParams);
    let body: Record<string, unknown> | undefined;
    const raw = await jsonBody(req);
    if (route.body) {
      let parsed: unknown;
      try { parsed = raw.length ? JSON.parse(raw.toString('utf8')) : {}; } catch {
        throw payloadError('Invalid JSON payload received. Unexpected token.', 'resource');
      }
      const bodyType = m.message(route.requestType).fields![route.body]!.type;
      body = m.check(bodyType, parsed, 'resource', 'resource');
    }
    const numericEnums = (url.searchParams.get('$alt') ?? url.searchParams.get('alt') ?? '').split(';').includes('enum-encoding=int');
    const reply = (value: Obj): void => send(res, 200, numericEnums ? numericOperationStatus(value) : value);
    switch (`${route.service}.${route.rpc}`) {
      case 'Images.Insert': reply(this.insertImage(body!, query)); return;
      case 'Images.Get': reply(this.imageJson(this.image(params['image']!))); return;
      case 'Images.List': reply(this.listImages(query)); return;
      case 'Images.GetFromFamily': reply(this.imageJson(this.fromFamily(params['family']!))); return;
      case 'Images.Deprecate': reply(this.deprecateImage(params['image']!, body!, query)); return;
      case 'Images.Delete': reply(this.deleteImage(params['image']!, query)); return;
      case 'GlobalOperations.Get':
      case 'GlobalOperations.Wait': reply(await this.poll(params['operation']!)); return;
      default: throw notImplemented(rpc);
    }
  }

  private checkQuery(route: Route, q: URLSearchParams): Record<string, string> {
    const fields = computeModel().queryFields(route);
    const out: Record<string, string> = {};
    for (const [key, value] of q) {
      if (SYSTEM_QUERY.has(key)) continue;
      const field = fields.get(key);
      if (!field) {
        throw payloadError(`Invalid JSON payload received. Unknown name ${JSON.stringify(key)}: Cannot bind query parameter. Field '${key}' could not be found in request message.`, key);
      }
      const ok = field.type === 'bool' ? value === 'true' || value === 'false'
        : /int/.test(field.type) ? /^\d+$/.test(value) && (!field.type.endsWith('32') || Number(value) < 2 ** 32) : true;
      if (!ok) throw payloadError(`Invalid value at '${snake(camel(key))}' (${SCALAR_TYPES[field.type] ?? field.type}), "${value}"`, key);
      out[camel(key)] = value;
    }
    return out;
  }

  private image(name: string): ImageRec {
    const img = this.imageMap.get(name);
    if (!img) throw new GoogleApiError(404, 'notFound', `The resource 'projects/${this.project}/global/images/${name}' was not found`);
    return img;
  }

  private imageLink(name: string): string { return `${COMPUTE_LINK}/projects/${this.project}/global/images/${name}`; }

  private replayed(query: Record<string, string>): OperationRec | undefined {
    const requestId = query['requestId'];
    if (requestId === undefined) return undefined;
    if (!UUID.test(requestId) || /^[0-]+$/.test(requestId)) {
      throw invalidField('requestId', requestId, 'The request ID must be a valid UUID with the exception that zero UUID is not supported (00000000-0000-0000-0000-000000000000).');
    }
    return this.requestIds.get(requestId.toLowerCase());
  }

  private remember(query: Record<string, string>, op: OperationRec): void {
    const requestId = query['requestId'];
    if (requestId !== undefined) this.requestIds.set(requestId.toLowerCase(), op);
  }

  private insertImage(body: Obj, query: Record<string, string>): Obj {
    const again = this.replayed(query);
    if (again) return this.operationJson(again);
    // Every Image field is taken, ignored as output only, or refused: a field a newer SDK adds is refused, not silently dropped.
    for (const field of Object.keys(body)) {
      if (IMAGE_NOT_IMPLEMENTED.includes(field) || !(IMAGE_FIELDS.has(field) || IMAGE_OUTPUT_ONLY.has(field))) {
        throw notImplemented(`images.insert with ${field} (only rawDisk sources, without encryption keys or shielded-VM state)`);
      }
    }
    const name = body['name'];
    if (typeof name !== 'string' || name === '') throw new GoogleApiError(400, 'required', "Required field 'resource.name' not specified");
    if (!NAME.test(name)) throw invalidField('resource.name', name, `Must be a match of regex '${NAME_REGEX_TEXT}'`);
    const family = body['family'] as string | undefined;
    if (family !== undefined && !NAME.test(family)) throw invalidField('resource.family', family, `Must be a match of regex '${NAME_REGEX_TEXT}'`);
    const labels = checkLabels(body['labels']);
    const storageLocations = body['storageLocations'] as string[] | undefined;
    for (const [i, loc] of (storageLocations ?? []).entries()) {
      if (!STORAGE_LOCATION.test(loc)) throw invalidField(`resource.storageLocations[${i}]`, loc, 'Invalid storage location: use a multi-region (us), dual-region (nam4) or region (europe-west1).');
    }
    const rawDisk = body['rawDisk'] as Obj | undefined;
    if (!rawDisk || typeof rawDisk['source'] !== 'string' || rawDisk['source'] === '') {
      throw new GoogleApiError(400, 'required', "Required field 'resource.rawDisk.source' not specified");
    }
    const source = rawDisk['source'];
    if (rawDisk['containerType'] !== undefined && rawDisk['containerType'] !== 'TAR') throw invalidField('resource.rawDisk.containerType', rawDisk['containerType'], 'Must be TAR.');
    if (!source.startsWith(STORAGE_SOURCE)) {
      if (source.startsWith('projects/')) throw notImplemented('images.insert from an Artifact Registry rawDisk.source');
      throw invalidField('resource.rawDisk.source', source, `The provided source is not a supported file: expected ${STORAGE_SOURCE}<bucket>/<object>.`);
    }
    const [bucketName, ...rest] = source.slice(STORAGE_SOURCE.length).split('/');
    const objectName = decodeURIComponent(rest.join('/'));
    const bucket = this.buckets.get(decodeURIComponent(bucketName ?? ''));
    if (!bucket || !objectName || !bucket.objects.has(objectName)) {
      throw new GoogleApiError(404, 'notFound', `The resource '${STORAGE_LINK}/b/${bucketName ?? ''}/o/${encodeURIComponent(objectName)}' of type 'Google Cloud Storage object' was not found.`);
    }
    if (this.imageMap.has(name)) throw new GoogleApiError(409, 'alreadyExists', `The resource 'projects/${this.project}/global/images/${name}' already exists`);
    const features = ((body['guestOsFeatures'] as Obj[] | undefined) ?? []).map((f) => f['type']).filter((t): t is string => typeof t === 'string');
    const img: ImageRec = {
      name, status: 'PENDING', labels, guestOsFeatures: features, source, diskFile: '', diskSizeGb: 0, archiveSizeBytes: 0,
      creationTimestamp: now(), id: randomId(), selfLink: this.imageLink(name), deleting: false, seq: ++this.seq,
      licenses: (body['licenses'] as string[] | undefined) ?? [], sourceObject: { bucket: bucket.name, name: objectName },
      ...(family !== undefined ? { family } : {}),
      ...(typeof body['description'] === 'string' ? { description: body['description'] } : {}),
      ...(typeof body['architecture'] === 'string' ? { architecture: body['architecture'] } : {}),
      ...(storageLocations ? { storageLocations } : {}),
    };
    const failure = this.nextInsertFailure;
    this.nextInsertFailure = undefined;
    this.imageMap.set(name, img);
    const op = this.startOperation('insert', img, async () => {
      const error = failure !== undefined ? { code: 'IMAGE_CREATION_FAILED', message: failure } : await this.importDisk(img);
      img.status = error ? 'FAILED' : 'READY';
      return error;
    });
    this.remember(query, op);
    return this.operationJson(op);
  }

  /** Reads the image's object as Compute does: a gzip'd tar holding only disk.raw, a whole number of GiB. */
  private async importDisk(img: ImageRec): Promise<OperationError | undefined> {
    const notValid: OperationError = { code: 'INVALID_IMAGE_TAR', message: 'The tar archive is not a valid image.' };
    const obj = this.buckets.get(img.sourceObject.bucket)?.objects.get(img.sourceObject.name);
    if (!obj) return { code: 'INVALID_IMAGE_TAR', message: `The resource '${img.source}' of type 'Google Cloud Storage object' was not found.` };
    const first = await firstTarBlock(obj.file);
    if (!first || first.length < 512) return notValid;
    const typeflag = String.fromCharCode(first[156] ?? 0);
    if (typeflag === 'x' || typeflag === 'g') return { ...notValid, message: `${notValid.message} (a PAX header, which Compute counts as an extra file: write the tar with --format=oldgnu or gnu)` };
    const listing = await exec('tar', ['-tzf', obj.file], { allowFailure: true });
    if (listing.code !== 0) return notValid;
    const members = listing.stdout.split('\n').filter(Boolean);
    if (members.length !== 1) return notValid;
    if (members[0] !== 'disk.raw') return { code: 'INVALID_IMAGE_TAR', message: `The file inside the tar archive was named '${members[0]!}'. It should be named 'disk.raw'.` };
    const folder = join(this.opts.dir, 'gce-images', `${img.name}-${img.id}`);
    await mkdir(folder, { recursive: true });
    const extracted = await exec('tar', ['-xzf', obj.file, '-C', folder, '--no-same-owner', '--no-same-permissions', 'disk.raw'], { allowFailure: true });
    if (extracted.code !== 0) return notValid;
    const diskFile = join(folder, 'disk.raw');
    const { size } = await stat(diskFile);
    if (size === 0 || size % GIB !== 0) {
      return { code: 'INVALID_IMAGE_TAR', message: `The disk.raw inside the tar archive is ${size} bytes, not a whole number of GiB (a multiple of ${GIB} bytes).` };
    }
    img.diskFile = diskFile;
    img.diskSizeGb = size / GIB;
    img.archiveSizeBytes = obj.size;
    return undefined;
  }

  private fromFamily(family: string): ImageRec {
    const candidates = [...this.imageMap.values()].filter((i) => i.family === family && i.status === 'READY' && (!i.deprecated || i.deprecated.state === 'ACTIVE'));
    const newest = candidates.sort((a, b) => b.seq - a.seq)[0];
    if (!newest) throw new GoogleApiError(404, 'notFound', `The resource 'projects/${this.project}/global/images/family/${family}' was not found`);
    return newest;
  }

  private listImages(query: Record<string, string>): Obj {
    const max = query['maxResults'] === undefined ? 500 : Number(query['maxResults']);
    if (max > 500) throw invalidField('maxResults', query['maxResults'], 'Must be less than or equal to 500');
    const orderBy = query['orderBy'];
    if (orderBy !== undefined && orderBy !== 'name' && orderBy !== 'creationTimestamp desc') {
      throw invalidField('orderBy', orderBy, 'Sorting is supported by name or "creationTimestamp desc" only.');
    }
    const matches = query['filter'] ? parseFilter(query['filter'], computeModel().message('Image')) : () => true;
    const all = [...this.imageMap.values()].filter((i) => matches(this.imageJson(i)));
    if (orderBy === 'creationTimestamp desc') all.sort((a, b) => b.seq - a.seq);
    else all.sort((a, b) => (a.name < b.name ? -1 : 1));
    const offset = decodePageToken(query['pageToken'] ?? null);
    const size = max === 0 ? 500 : max;
    const page = all.slice(offset, offset + size).map((i) => this.imageJson(i));
    return {
      kind: 'compute#imageList', id: `projects/${this.project}/global/images`, selfLink: `${COMPUTE_LINK}/projects/${this.project}/global/images`,
      items: page, ...(offset + size < all.length ? { nextPageToken: b64url(String(offset + size)) } : {}),
    };
  }

  private ready(img: ImageRec): void {
    if (img.status === 'PENDING' || img.deleting || img.busy) {
      throw new GoogleApiError(400, 'resourceNotReady', `The resource 'projects/${this.project}/global/images/${img.name}' is not ready`);
    }
  }

  private deprecateImage(name: string, body: Obj, query: Record<string, string>): Obj {
    const again = this.replayed(query);
    if (again) return this.operationJson(again);
    const img = this.image(name);
    const state = body['state'];
    if (typeof state !== 'string') throw invalidField('resource.state', '', 'A deprecation state is required: ACTIVE, DEPRECATED, OBSOLETE or DELETED.');
    for (const when of ['deprecated', 'obsolete', 'deleted'] as const) {
      const v = body[when];
      if (v !== undefined && (typeof v !== 'string' || !RFC3339.test(v))) throw invalidField(`resource.${when}`, v, 'Must be an RFC 3339 timestamp.');
    }
    const replacement = body['replacement'];
    if (replacement !== undefined) {
      const target = typeof replacement === 'string' ? this.imageNameFromUrl(replacement) : undefined;
      if (target === undefined || !this.imageMap.has(target)) throw invalidField('resource.replacement', replacement, 'The referenced image resource cannot be found.');
    }
    this.ready(img);
    const status = {
      state,
      ...(typeof replacement === 'string' ? { replacement: this.imageLink(this.imageNameFromUrl(replacement)!) } : {}),
      ...(typeof body['deprecated'] === 'string' ? { deprecated: body['deprecated'] } : {}),
      ...(typeof body['obsolete'] === 'string' ? { obsolete: body['obsolete'] } : {}),
      ...(typeof body['deleted'] === 'string' ? { deleted: body['deleted'] } : {}),
    };
    const op = this.startOperation('deprecate', img, async () => {
      if (state === 'ACTIVE' && Object.keys(status).length === 1) delete img.deprecated; else img.deprecated = status;
      return undefined;
    });
    img.busy = op.id;
    this.remember(query, op);
    return this.operationJson(op);
  }

  private deleteImage(name: string, query: Record<string, string>): Obj {
    const again = this.replayed(query);
    if (again) return this.operationJson(again);
    const img = this.image(name);
    this.ready(img);
    img.deleting = true;
    const op = this.startOperation('delete', img, async () => {
      this.imageMap.delete(img.name);
      if (img.diskFile) await rm(dirname(img.diskFile), { recursive: true, force: true });
      return undefined;
    });
    img.busy = op.id;
    this.remember(query, op);
    return this.operationJson(op);
  }

  /** The image name an image URL (full, project-relative or global-relative) names in this project. */
  private imageNameFromUrl(ref: string): string | undefined {
    const m = /^(?:(?:https:\/\/(?:www\.googleapis\.com|compute\.googleapis\.com)\/compute\/v1\/|[^/]*:\/\/127\.0\.0\.1(?::\d+)?\/compute\/v1\/)?projects\/([^/]+)\/)?global\/images\/([^/]+)$/.exec(ref);
    if (!m || (m[1] !== undefined && m[1] !== this.project)) return undefined;
    return m[2];
  }

  private imageJson(i: ImageRec): Obj {
    return {
      kind: 'compute#image', id: i.id, creationTimestamp: i.creationTimestamp, name: i.name,
      ...(i.description !== undefined ? { description: i.description } : {}),
      sourceType: 'RAW', rawDisk: { source: i.source, containerType: 'TAR' },
      ...(i.deprecated ? { deprecated: { ...i.deprecated } } : {}),
      status: i.deleting ? 'DELETING' : i.status, archiveSizeBytes: String(i.archiveSizeBytes), diskSizeGb: String(i.diskSizeGb),
      ...(i.licenses.length ? { licenses: [...i.licenses] } : {}),
      ...(i.family !== undefined ? { family: i.family } : {}),
      selfLink: i.selfLink,
      ...(Object.keys(i.labels).length ? { labels: { ...i.labels } } : {}),
      labelFingerprint: createHash('sha256').update(JSON.stringify(Object.entries(i.labels).sort())).digest('base64').slice(0, 11) + '=',
      ...(i.guestOsFeatures.length ? { guestOsFeatures: i.guestOsFeatures.map((type) => ({ type })) } : {}),
      ...(i.storageLocations ? { storageLocations: [...i.storageLocations] } : {}),
      ...(i.architecture !== undefined ? { architecture: i.architecture } : {}),
    };
  }

  // --- operations -----------------------------------------------------------------------------

  private startOperation(type: OperationRec['type'], img: ImageRec, work: OperationRec['work']): OperationRec {
    const t = Date.now();
    const op: OperationRec = {
      id: randomId(), name: `operation-${t}-${randomBytes(7).toString('hex').slice(0, 13)}-${randomBytes(4).toString('hex')}-${randomBytes(4).toString('hex')}`,
      type, targetLink: img.selfLink, targetId: img.id, insertTime: new Date(t).toISOString(), status: 'PENDING', progress: 0, polls: 0, work,
    };
    this.operations.set(op.name, op);
    return op;
  }

  private async poll(ref: string): Promise<Obj> {
    const op = this.operations.get(ref) ?? [...this.operations.values()].find((o) => o.id === ref);
    if (!op) throw new GoogleApiError(404, 'notFound', `The resource 'projects/${this.project}/global/operations/${ref}' was not found`);
    if (op.status !== 'DONE') {
      op.polls++;
      op.startTime ??= now();
      if (op.polls <= this.pollsBeforeDone) {
        op.status = 'RUNNING';
        op.progress = Math.floor((op.polls / (this.pollsBeforeDone + 1)) * 100);
      } else {
        op.finishing ??= (async () => {
          let error: OperationError | undefined;
          try { error = await op.work(); } catch (e) { error = { code: 'INTERNAL_ERROR', message: `gce stand-in bug: ${e instanceof Error ? e.message : String(e)}` }; }
          const img = [...this.imageMap.values()].find((i) => i.id === op.targetId);
          if (img?.busy === op.id) delete img.busy;
          if (error) op.error = error;
          op.status = 'DONE';
          op.progress = 100;
          op.endTime = now();
        })();
        await op.finishing;
      }
    }
    return this.operationJson(op);
  }

  private operationJson(op: OperationRec): Obj {
    return {
      kind: 'compute#operation', id: op.id, name: op.name, operationType: op.type, targetLink: op.targetLink, targetId: op.targetId,
      status: op.status, user: this.clientEmail, progress: op.progress, insertTime: op.insertTime,
      ...(op.startTime ? { startTime: op.startTime } : {}), ...(op.endTime ? { endTime: op.endTime } : {}),
      ...(op.error ? { error: { errors: [{ code: op.error.code, message: op.error.message }] }, httpErrorStatusCode: 400, httpErrorMessage: 'BAD REQUEST' } : {}),
      selfLink: `${COMPUTE_LINK}/projects/${this.project}/global/operations/${op.name}`,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Operation.status is a proto enum: with `$alt=json;enum-encoding=int` Google answers its number. */
function numericOperationStatus(value: Obj): Obj {
  if (value['kind'] !== 'compute#operation') return value;
  const values = computeModel().message('Operation').nested?.['Status']?.values ?? {};
  const n = values[String(value['status'])];
  return n === undefined ? value : { ...value, status: n };
}

function checkLabels(v: unknown): Record<string, string> {
  if (v === undefined) return {};
  const labels = v as Record<string, string>;
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw invalidField('resource.labels', '', `Too many labels: ${entries.length}. An image can have at most ${MAX_LABELS} labels.`);
  for (const [k, value] of entries) {
    if (!LABEL_KEY.test(k)) {
      throw invalidField('resource.labels', '', `Label key '${k}' violates format constraints. The key must start with a lowercase character, can only contain lowercase letters, numeric characters, underscores and dashes. The key can be at most 63 characters long. International characters are allowed.`);
    }
    if (!LABEL_VALUE.test(value)) {
      throw invalidField('resource.labels', '', `Label value '${value}' violates format constraints. The value can only contain lowercase letters, numeric characters, underscores and dashes. The value can be at most 63 characters long. International characters are allowed.`);
    }
  }
  return { ...labels };
}

/**
 * A Compute list filter: terms `field = value`, `field != value`, `field:*`, `field eq regex`,
 * `field ne regex`, ANDed (space or AND), each optionally in parentheses.
 */
function parseFilter(filter: string, image: ProtoNode): (item: Obj) => boolean {
  const bad = (why: string): GoogleApiError => invalidField('filter', filter, `Invalid list filter expression: ${why}`);
  const tokens: string[] = [];
  const re = /\s*(\(|\)|!=|=|:|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s()=!:"']+)/y;
  let at = 0;
  while (at < filter.length) {
    re.lastIndex = at;
    const m = re.exec(filter);
    if (!m) { if (filter.slice(at).trim() === '') break; throw bad(`cannot read '${filter.slice(at)}'`); }
    tokens.push(m[1]!);
    at = re.lastIndex;
  }
  const terms: { field: string; op: string; value: string; quoted: boolean }[] = [];
  let i = 0;
  let depth = 0;
  while (i < tokens.length) {
    const t = tokens[i]!;
    if (t === '(') { depth++; i++; continue; }
    if (t === ')') { if (--depth < 0) throw bad('unbalanced parentheses'); i++; continue; }
    if (t === 'AND') { i++; continue; }
    if (t === 'OR') throw notImplemented('OR in list filters');
    if (t === 'NOT' || t.startsWith('-')) throw notImplemented('negation in list filters');
    const op = tokens[i + 1];
    const value = tokens[i + 2];
    if (op === undefined || value === undefined || !['=', '!=', ':', 'eq', 'ne'].includes(op)) throw bad(`expected a comparison after '${t}'`);
    const top = t.split('.')[0]!;
    if (!image.fields?.[top]) throw bad(`Invalid field name '${t}'`);
    const quoted = /^["']/.test(value);
    terms.push({ field: t, op, value: quoted ? value.slice(1, -1).replace(/\\(.)/g, '$1') : value, quoted });
    i += 3;
  }
  if (depth !== 0) throw bad('unbalanced parentheses');
  if (terms.length === 0) throw bad('no terms');
  const regexStyle = terms.some((t) => t.op === 'eq' || t.op === 'ne');
  if (regexStyle && terms.some((t) => t.op !== 'eq' && t.op !== 'ne')) throw bad('eq/ne and =/!= cannot be mixed');
  const read = (item: Obj, field: string): string | undefined => {
    let v: unknown = item;
    for (const part of field.split('.')) v = isObj(v) ? v[part] : undefined;
    return v === undefined || v === null ? undefined : typeof v === 'object' ? JSON.stringify(v) : String(v);
  };
  return (item) => terms.every((t) => {
    const v = read(item, t.field);
    switch (t.op) {
      case '=': return v === t.value;
      case '!=': return v !== t.value;
      case ':': return t.value === '*' ? v !== undefined : v !== undefined && v.includes(t.value);
      case 'eq': return v !== undefined && new RegExp(`^(?:${t.value})$`).test(v);
      default: return v === undefined || !new RegExp(`^(?:${t.value})$`).test(v);
    }
  });
}

type ContentRange =
  | { kind: 'query'; total?: number }
  | { kind: 'data'; start: number; end?: number; total?: number; final: boolean };

/** Content-Range of a resumable upload request (RFC 9110 byte ranges plus GCS's `*` forms). */
function parseContentRange(header: string | string[] | undefined): ContentRange | 'bad' {
  if (header === undefined) return { kind: 'data', start: 0, final: true };
  if (typeof header !== 'string') return 'bad';
  const m = /^bytes (?:\*|(\d+)-(\d+|\*))\/(\d+|\*)$/.exec(header.trim());
  if (!m) return 'bad';
  const total = m[3] === '*' ? undefined : Number(m[3]);
  if (m[1] === undefined) return { kind: 'query', ...(total !== undefined ? { total } : {}) };
  const start = Number(m[1]);
  if (m[2] === '*') return { kind: 'data', start, final: true, ...(total !== undefined ? { total } : {}) };
  const end = Number(m[2]);
  if (end < start) return 'bad';
  return { kind: 'data', start, end, final: total !== undefined && end === total - 1, ...(total !== undefined ? { total } : {}) };
}

function parseGoogHash(header: string | string[] | undefined): { crc32c?: string; md5?: string } {
  const out: { crc32c?: string; md5?: string } = {};
  for (const part of (Array.isArray(header) ? header.join(',') : header ?? '').split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 'crc32c') out.crc32c = v; else if (k === 'md5') out.md5 = v;
  }
  return out;
}

/** MD5 (base64) and CRC-32C (base64 of the big-endian value) of a file, as GCS reports them. */
async function hashFile(file: string): Promise<{ md5Hash: string; crc32c: string }> {
  const md5 = createHash('md5');
  const crc = new CRC32C();
  for await (const chunk of createReadStream(file)) {
    md5.update(chunk as Buffer);
    crc.update(chunk as Buffer);
  }
  return { md5Hash: md5.digest('base64'), crc32c: crc.toString() };
}

/** The first 512-byte block inside a gzip'd file, or undefined when it is not gzip. */
async function firstTarBlock(file: string): Promise<Buffer | undefined> {
  const input = createReadStream(file);
  const gunzip = createGunzip();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of input.pipe(gunzip)) {
      chunks.push(c as Buffer);
      size += (c as Buffer).length;
      if (size >= 512) break;
    }
  } catch {
    return undefined;
  } finally {
    input.destroy();
    gunzip.destroy();
  }
  return size ? Buffer.concat(chunks).subarray(0, 512) : undefined;
}

function decodePageToken(token: string | null): number {
  if (token === null || token === '') return 0;
  const n = Number(Buffer.from(token, 'base64url').toString('utf8'));
  if (!Number.isInteger(n) || n < 0) throw invalidField('pageToken', token, 'Invalid page token.');
  return n;
}

/** A Compute resource id: a uint64 in decimal. */
function randomId(): string {
  return BigInt(`0x${randomBytes(8).toString('hex')}`).toString();
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) { res.destroy(); return; }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=UTF-8', 'Content-Length': Buffer.byteLength(text), Vary: 'Origin, X-Origin, Referer', ...headers });
  res.end(text);
}

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) { res.destroy(); return; }
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Signs claims as the given key would (RS256), for tests that speak the token protocol directly. */
export function signJwt(claims: Record<string, unknown>, privateKeyPem: string, kid?: string): string {
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', ...(kid ? { kid } : {}) }));
  const payload = b64url(JSON.stringify(claims));
  const signer = createSign('RSA-SHA256');
  signer.update(`${header}.${payload}`);
  return `${header}.${payload}.${signer.sign(privateKeyPem).toString('base64url')}`;
}

export async function startGceStandin(opts: GceStandinOptions): Promise<GceStandin> {
  const standin = new GceStandinServer(opts);
  await standin.listen();
  return standin;
}
