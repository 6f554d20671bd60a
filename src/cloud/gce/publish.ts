/**
 * A release as a Compute Engine image: the release's GCE tarball (a gzip'd tar holding `disk.raw`)
 * uploaded to a Cloud Storage bucket (upload.ts), then `images.insert` from it, through the official
 * `@google-cloud/compute` SDK (REST) with Google's application default credentials.
 *
 * - The image is named `<image_prefix>-<version as a label>` (web + release-0.1.0 → web-release-0-1-0),
 *   in the family from kiln.yaml (default the image name), with guest OS features from the disk:
 *   UEFI_COMPATIBLE when it has an ESP, VIRTIO_SCSI_MULTIQUEUE and GVNIC (their drivers are checked
 *   first), plus any kiln.yaml adds.
 * - Labels `image-version`, `kiln-image`, `kiln-digest` (the digest's first 63 hex digits) and
 *   `kiln-commit`; the exact version, the whole digest and the commit in the description.
 * - Idempotent by name: an image of that name made from this release is recorded and nothing is sent
 *   (one still being made is waited for); made from another release, or not by Kiln, is an error.
 * - Fit for GCE first (src/cloud/fitness.ts): virtio-scsi and gVNIC drivers, root by UUID, and a disk
 *   of a whole number of GiB (Compute Engine refuses others).
 * - The tar.gz is deleted from the bucket once the image is READY (Compute Engine keeps its own copy),
 *   unless publish.gce.keep_object.
 * The image's path (projects/<p>/global/images/<name>) is recorded in the image's signed metadata under
 * its project (`kiln resolve --cloud gce`).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GlobalOperationsClient, ImagesClient, type protos } from '@google-cloud/compute';
import { KilnError } from '../../errors.js';
import { exec } from '../../exec.js';
import { humanSeconds, type Logger } from '../../log.js';
import type { ReleaseStore, Resolved } from '../../store/release-store.js';
import { checkFit, FIX_HINT, type Fitness } from '../fitness.js';
import { waitSeconds, type GcePublishConfig } from '../../template/schema.js';
import { gceDescription, gceImageName, gceLabels, labelValue, parseGceDescription } from './names.js';
import { gceError, gcp, storageClient, uploadTarball, type TarballToUpload } from './upload.js';

export type { GcePublishConfig };

export interface GcePublished { project: string; image: string; path: string; family: string; existing: boolean; object: string; sent: number; seconds: number }

const GIB = 1024 ** 3;

export const GCE_DEFAULT_COMPUTE = 'https://compute.googleapis.com';

/** The Compute clients of publish.gce (a custom endpoint's host and port; REST, as the SDK does for Compute). */
export function computeClients(cfg: Pick<GcePublishConfig, 'compute_endpoint'>): { images: ImagesClient; operations: GlobalOperationsClient } {
  const u = new URL(cfg.compute_endpoint ?? GCE_DEFAULT_COMPUTE);
  const opts = u.origin === GCE_DEFAULT_COMPUTE ? {} : { apiEndpoint: u.hostname, port: u.port ? Number(u.port) : 443 };
  return { images: new ImagesClient({ ...opts, fallback: true }), operations: new GlobalOperationsClient({ ...opts, fallback: true }) };
}

export const imagePath = (project: string, image: string) => `projects/${project}/global/images/${image}`;

/** The raw disk a GCE image is made of: the release's raw artifact, else disk.raw out of the tarball. */
async function diskForFitness(r: Resolved, tarball: string, scratch: string, logger: Logger): Promise<string> {
  const raw = r.artifacts.find((a) => a.format === 'raw')?.location;
  if (raw) return raw;
  // Only the one member, sparse, into Kiln's scratch (GNU tar refuses names leaving it).
  await exec('tar', ['-xzf', tarball, '-C', scratch, '--sparse', '--no-same-owner', '--no-same-permissions', '--', 'disk.raw'], { logger, hint: 'a GCE tarball holds disk.raw' });
  return join(scratch, 'disk.raw');
}

export async function publishReleaseToGce(store: ReleaseStore, ref: string, cfg: GcePublishConfig, opts: { logger: Logger; signal?: AbortSignal }): Promise<GcePublished> {
  // Not hashed here: the upload hashes the very bytes it sends and compares them with the release's digest.
  const r = await store.resolve(ref, { format: 'gce', verifyArtifacts: false });
  const tar = r.artifact;
  if (!tar) throw new KilnError(`${ref} has no gce artifact`, { hint: 'Compute Engine takes the gce tarball: add gce to formats in kiln.yaml and release a new version' });
  if (store.backend.remote) throw new KilnError(`${ref} is in a remote store: pull it first`, { hint: `kiln pull ${ref} --from <store>` });
  const scratch = mkdtempSync(join(tmpdir(), 'kiln-publish-'));
  let fit: Fitness;
  let diskSize: number;
  try {
    const disk = await diskForFitness(r, tar.location, scratch, opts.logger);
    diskSize = statSync(disk).size;
    fit = await checkFit(disk, 'gce', scratch, opts.logger);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (diskSize % GIB !== 0) fit.problems.push(`the disk is ${diskSize} bytes, not a whole number of GiB: Compute Engine refuses it (set disk.size to whole GiB, e.g. 2G)`);
  if (fit.problems.length) throw new KilnError(`${r.name}@${r.version} is not fit for GCE`, { detail: fit.problems.join('\n'), hint: FIX_HINT.gce });
  const features = ['VIRTIO_SCSI_MULTIQUEUE', 'GVNIC', ...(fit.bootMode === 'legacy-bios' ? [] : ['UEFI_COMPATIBLE'])];
  const rel = { name: r.name, version: r.version, digest: r.digest, commit: r.commit, file: tar.location, sha256: tar.sha256, size: tar.size };
  return publishTarballToGce(store, rel, [...new Set([...features, ...(cfg.guest_os_features ?? [])])].sort(), cfg, opts);
}

type Image = protos.google.cloud.compute.v1.IImage;
export type Operation = protos.google.cloud.compute.v1.IOperation;

const notFound = (e: unknown) => {
  const c = (e as { code?: unknown }).code;
  // REST errors carry the HTTP status; gax maps 404 to gRPC NOT_FOUND (5).
  return c === 404 || c === 5;
};

/** The image of that name, or undefined. */
export async function getImage(images: ImagesClient, project: string, image: string): Promise<Image | undefined> {
  try {
    return (await images.get({ project, image }))[0];
  } catch (e) {
    if (notFound(e)) return undefined;
    throw gceError(e, `reading the image ${imagePath(project, image)}`);
  }
}

const TRANSIENT = /ECONNRESET|ETIMEDOUT|EPIPE|ECONNREFUSED|socket hang up|EAI_AGAIN/;

/**
 * A mutating Compute call with one request id for all its tries: a request that failed on the way (a
 * reset connection, a 5xx) is sent again with the same id, and Compute answers a repeated id with the
 * first request's operation instead of doing it twice. Three tries, one and two seconds apart.
 */
export async function withRequestId(call: (requestId: string) => Promise<[{ latestResponse: unknown }, ...unknown[]]>): Promise<Operation> {
  const requestId = randomUUID();
  for (let attempt = 1; ; attempt++) {
    try {
      return (await call(requestId))[0].latestResponse as Operation;
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      const transient = TRANSIENT.test(`${String(code)} ${(e as Error).message}`) || (typeof code === 'number' && code >= 500);
      if (!transient || attempt === 3) throw e;
      await new Promise((res) => setTimeout(res, attempt * 1000));
    }
  }
}

/** Waits for a global operation to be DONE (bounded), and fails with its errors. */
export async function waitOperation(operations: GlobalOperationsClient, project: string, op: Operation, what: string, deadline: number, signal?: AbortSignal): Promise<Operation> {
  let cur = op;
  while (String(cur.status) !== 'DONE') {
    signal?.throwIfAborted();
    if (Date.now() > deadline) throw new KilnError(`${what}: still ${String(cur.status)} when the wait ended`, { hint: 'publish again later: the image is found by name and waited for' });
    // wait returns when the operation is done or after about two minutes, whichever is first.
    cur = (await gcp(`waiting for ${what}`, () => operations.wait({ project, operation: String(cur.name) })))[0];
  }
  const errs = cur.error?.errors ?? [];
  if (errs.length) throw new KilnError(`${what} failed: ${errs.map((e) => `${e.code ?? ''} ${e.message ?? ''}`.trim()).join('; ')}`, { hint: 'the tarball must hold disk.raw, a whole number of GiB; the Compute Engine service agent must be able to read the bucket' });
  return cur;
}

function checkExisting(img: Image, rel: Pick<TarballToUpload, 'digest' | 'version'>, what: string): void {
  const d = parseGceDescription(img.description);
  if (d?.digest !== rel.digest) {
    throw new KilnError(`${what} exists, ${d ? `made from another release (${d.name}@${d.version}, ${d.digest})` : 'and Kiln did not make it (its description names no release)'}`,
      { hint: `image names are lowercase: ${rel.version} maps to ${labelValue(rel.version)}; a release is never published twice under one name (set publish.gce.image_prefix for another)` });
  }
}

/** Uploads the tarball, makes the image, records it. */
export async function publishTarballToGce(store: ReleaseStore, rel: TarballToUpload, features: string[], cfg: GcePublishConfig, opts: { logger: Logger; signal?: AbortSignal }): Promise<GcePublished> {
  const log = opts.logger;
  const t0 = Date.now();
  const deadline = t0 + waitSeconds(cfg.wait ?? '30m') * 1000;
  const { images, operations } = computeClients(cfg);
  const project = cfg.project;
  const imageName = gceImageName(cfg.image_prefix ?? labelValue(rel.name), rel.version);
  const family = cfg.family ?? labelValue(rel.name);
  const path = imagePath(project, imageName);
  const what = `the image ${path}`;
  const ref = `${rel.name}@${rel.version}`;
  try {
    let img = await getImage(images, project, imageName);
    let object = '';
    let sent = 0;
    const existing = Boolean(img);
    if (img) {
      checkExisting(img, rel, what);
      if (img.status === 'FAILED') throw new KilnError(`${what} is FAILED`, { hint: `delete it (gcloud compute images delete ${imageName} --project ${project}) and publish again` });
      if (img.status !== 'READY') {
        log.info(`gce: ${what} is being made (${String(img.status)}) by an earlier run: waiting for it`);
        img = await waitReady(images, project, imageName, what, deadline, opts.signal);
      } else log.info(`gce: ${what} is already there for this release: nothing sent`);
    } else {
      const up = await uploadTarball(rel, { project, bucket: cfg.bucket, prefix: cfg.object_prefix ?? 'kiln/', endpoint: cfg.storage_endpoint }, opts);
      object = `gs://${up.bucket}/${up.object}`;
      sent = up.sent;
      const image: Image = {
        name: imageName, family, description: gceDescription(rel), labels: gceLabels(rel),
        rawDisk: { source: `https://storage.googleapis.com/${up.bucket}/${up.object}`, containerType: 'TAR' },
        guestOsFeatures: features.map((type) => ({ type })), architecture: 'X86_64',
        ...(cfg.storage_locations?.length ? { storageLocations: cfg.storage_locations } : {}),
      };
      log.info(`gce: creating ${what} (family ${family}; ${features.join(', ')})`);
      let op: Operation | undefined;
      try {
        op = await withRequestId((requestId) => images.insert({ project, imageResource: image, requestId }));
      } catch (e) {
        // Another run made it between the look and the insert: the same release's is fine.
        if ((e as { code?: unknown }).code !== 409 && (e as { code?: unknown }).code !== 6) throw gceError(e, `creating ${what}`);
        const other = await getImage(images, project, imageName);
        if (!other) throw gceError(e, `creating ${what}`);
        checkExisting(other, rel, what);
      }
      if (op) await waitOperation(operations, project, op, `creating ${what}`, deadline, opts.signal);
      img = await waitReady(images, project, imageName, what, deadline, opts.signal);
      if (!cfg.keep_object) {
        await storageClient({ project, endpoint: cfg.storage_endpoint }).bucket(up.bucket).file(up.object).delete({ ifGenerationMatch: up.generation })
          .then(() => log.info(`gce: deleted ${object}: the image holds its own copy`), (e: unknown) => log.warn(`gce: could not delete ${object}: ${(gceError(e, 'deleting') as Error).message}`));
      }
      log.info(`gce: ${what} is READY after ${humanSeconds(Date.now() - t0)}`);
    }
    await store.addCloudIds(ref, { gce: { [project]: path } });
    return { project, image: imageName, path, family, existing, object, sent, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await Promise.allSettled([images.close(), operations.close()]);
  }
}

async function waitReady(images: ImagesClient, project: string, name: string, what: string, deadline: number, signal?: AbortSignal): Promise<Image> {
  for (;;) {
    signal?.throwIfAborted();
    const img = await getImage(images, project, name);
    if (!img) throw new KilnError(`${what} disappeared while it was being made`, { hint: 'someone deleted it: publish again' });
    if (img.status === 'READY') return img;
    if (img.status === 'FAILED') throw new KilnError(`${what} ended FAILED`, { hint: `delete it (gcloud compute images delete ${name} --project ${project}); the tarball must hold disk.raw, a whole number of GiB` });
    if (Date.now() > deadline) throw new KilnError(`${what} is still ${String(img.status)} when the wait ended`, { hint: 'publish again later: the image is found by name and waited for' });
    await new Promise((res) => setTimeout(res, 2000));
  }
}
