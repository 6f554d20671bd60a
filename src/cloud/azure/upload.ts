/**
 * A release's fixed VHD as an Azure page blob (the form Azure Compute Gallery and managed disks take a
 * VHD in), through the official `@azure/storage-blob` SDK: the blob is created with the VHD's length,
 * a lease is held while it is written, and only the non-zero ranges are put (page-ranges.ts), each
 * with its MD5 so the service checks what arrived, a bounded number at once.
 *
 * The blob's metadata says whose it is (`kiln_release_digest`, the version, the commit) and whether
 * it is complete (`kiln_complete`, set last, with the VHD's sha256). So:
 * - a complete blob of the same release is reused and nothing is sent;
 * - an incomplete one (an interrupted upload) is resumed: Get Page Ranges says what is written, and a
 *   range already fully written is read back and compared, and sent again only if it differs (a Put
 *   Page is all or nothing, but the blob may have been written by someone else since);
 * - a blob of this name from another release, or one Kiln did not make, is an error: never overwritten.
 * The VHD is read from the store once and its sha256 must be the release's before the blob is marked
 * complete; a mismatch deletes the blob.
 *
 * Credentials: AZURE_STORAGE_CONNECTION_STRING (an account key or SAS, e.g. Azurite's), else the
 * storage account URL with @azure/identity's DefaultAzureCredential. Never logged or recorded.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { BlobServiceClient, type BlobLeaseClient, type ContainerClient, type PageBlobClient } from '@azure/storage-blob';
import { DefaultAzureCredential } from '@azure/identity';
import { KilnError } from '../../errors.js';
import { humanBytes, humanSeconds, type Logger } from '../../log.js';
import { checkAzureVhdSize, pageRanges } from './page-ranges.js';

export interface VhdToUpload { name: string; version: string; digest: string; commit: string; vhdFile: string; vhdSha256: string; vhdSize: number }

export interface PageBlobTarget {
  /** https://<account>.blob.core.windows.net (ignored when AZURE_STORAGE_CONNECTION_STRING is set). */
  accountUrl?: string;
  container: string;
}

export interface UploadedBlob { url: string; blobName: string; existing: boolean; sent: number; skipped: number; seconds: number }

export const META = { digest: 'kiln_release_digest', image: 'kiln_image', version: 'imageversion', commit: 'kiln_commit', complete: 'kiln_complete', sha256: 'kiln_vhd_sha256' } as const;

export function blobService(target: PageBlobTarget): BlobServiceClient {
  const conn = process.env.AZURE_STORAGE_CONNECTION_STRING;
  if (conn) return BlobServiceClient.fromConnectionString(conn);
  if (!target.accountUrl) throw new KilnError('no Azure storage account to upload to', { hint: 'set publish.azure.storage_account (or AZURE_STORAGE_CONNECTION_STRING)' });
  return new BlobServiceClient(target.accountUrl, new DefaultAzureCredential());
}

export function azureError(e: unknown, what: string): unknown {
  if (e instanceof KilnError || !(e instanceof Error)) return e;
  const code = (e as { code?: string }).code;
  const status = (e as { statusCode?: number }).statusCode;
  if (e.name === 'AuthenticationError' || e.name === 'CredentialUnavailableError' || e.name === 'AggregateAuthenticationError') {
    return new KilnError(`${what} failed: no Azure token: ${e.message.split('\n')[0]}`, { hint: 'the Azure credentials were refused or are missing: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or use a managed identity, workload identity or az login)' });
  }
  if (status === undefined && !code) return e;
  const hint = status === 403 || /AuthorizationFailure|AuthenticationFailed|AuthorizationPermissionMismatch/.test(code ?? '') ? 'the credentials lack access to the storage account (Storage Blob Data Contributor), or the key is wrong'
    : /ECONNREFUSED|ENOTFOUND/.test(code ?? '') ? 'check the storage account URL and the network'
      : undefined;
  return new KilnError(`${what} failed: ${code ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${e.message.split('\n')[0]}`, { hint });
}

const LEASE_SECONDS = 20;

/** True when the blob holds exactly `data` at `offset` (a resumed upload checks what it does not send again). */
async function pagesEqual(blob: PageBlobClient, offset: number, data: Buffer): Promise<boolean> {
  const got = await blob.downloadToBuffer(offset, data.length).catch(() => undefined);
  return got !== undefined && got.equals(data);
}

async function acquireLease(lease: BlobLeaseClient, what: string, log: Logger): Promise<string> {
  const t0 = Date.now();
  for (let said = false; ; said = true) {
    try {
      const id = (await lease.acquireLease(LEASE_SECONDS)).leaseId;
      if (!id) throw new KilnError(`no lease id for ${what}`);
      return id;
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode !== 409 || Date.now() - t0 > (LEASE_SECONDS + 10) * 1000) throw azureError(e, `taking a lease on ${what}`);
      if (!said) log.info(`azure: ${what} is leased by another upload (or one that was killed): waiting up to ${LEASE_SECONDS} s for its lease to end`);
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
}

/** An Azure call whose failure names what was being done and what to do. */
export async function az<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try { return await fn(); } catch (e) { throw azureError(e, what); }
}

export async function uploadVhdPageBlob(rel: VhdToUpload, target: PageBlobTarget, opts: { logger: Logger; parallel?: number; signal?: AbortSignal }): Promise<UploadedBlob> {
  checkAzureVhdSize(rel.vhdSize);
  const log = opts.logger;
  const service = blobService(target);
  const container: ContainerClient = service.getContainerClient(target.container);
  await az(`creating the container ${target.container}`, () => container.createIfNotExists());
  const blobName = `${rel.name}-${rel.version}.vhd`;
  const blob: PageBlobClient = container.getPageBlobClient(blobName);
  const what = `the page blob ${target.container}/${blobName}`;
  const meta = { [META.digest]: rel.digest, [META.image]: rel.name, [META.version]: rel.version, [META.commit]: rel.commit };

  const props = await blob.getProperties().catch((e: unknown) => {
    if ((e as { statusCode?: number }).statusCode === 404) return undefined;
    throw azureError(e, `reading ${what}`);
  });
  let written: { start: number; end: number }[] = [];
  if (props) {
    const m = props.metadata ?? {};
    if (m[META.digest] !== rel.digest) {
      throw new KilnError(`${what} exists, ${m[META.digest] ? `made from another release (${m[META.digest]})` : 'and Kiln did not make it (no kiln_release_digest)'}`, { hint: 'a release is never uploaded twice under one name: delete that blob if it is wrong, or publish a new version' });
    }
    if (props.contentLength !== rel.vhdSize) throw new KilnError(`${what} is ${props.contentLength} bytes, the release's VHD ${rel.vhdSize}`, { hint: 'delete the blob and publish again' });
    if (m[META.complete] === 'true' && m[META.sha256] === rel.vhdSha256) {
      log.info(`azure: ${what} is already uploaded (release ${rel.digest.slice(0, 19)}…): nothing sent`);
      return { url: blob.url, blobName, existing: true, sent: 0, skipped: 0, seconds: 0 };
    }
    for await (const r of blob.listPageRanges()) if (r.start !== undefined && r.end !== undefined) written.push({ start: r.start, end: r.end });
    log.info(`azure: resuming ${what} of an interrupted upload (${humanBytes(written.reduce((n, r) => n + r.end + 1 - r.start, 0))} written already)`);
  } else {
    await az(`creating ${what}`, () => blob.create(rel.vhdSize, { metadata: meta }));
  }
  written = written.sort((a, b) => a.start - b.start);
  const isWritten = (offset: number, length: number) => written.some((r) => r.start <= offset && offset + length - 1 <= r.end);

  // A short lease, renewed while writing: a run that dies leaves it for at most LEASE_SECONDS, and a
  // live one never loses it. Another holder is waited for that long, never broken.
  const lease = blob.getBlobLeaseClient();
  const leaseId = await acquireLease(lease, what, log);
  const renew = setInterval(() => { lease.renewLease().catch((e: unknown) => log.warn(`renewing the lease on ${what}: ${(e as Error).message}`)); }, (LEASE_SECONDS * 1000) / 3);
  const conditions = { leaseId };
  const stats: { bytes: number; sent: number; skipped: number; sha256?: string } = { bytes: 0, sent: 0, skipped: 0 };
  const t0 = Date.now();
  const parallel = Math.max(1, opts.parallel ?? 8);
  if (opts.signal) setMaxListeners(parallel + 16, opts.signal);
  let failure: unknown;
  let put = 0;
  let ranges = 0;
  let resent = 0;
  let lastReport = 0;
  const inFlight = new Set<Promise<void>>();
  try {
    for await (const r of pageRanges(rel.vhdFile, stats)) {
      opts.signal?.throwIfAborted();
      if (failure) break;
      // Written by the interrupted run: read back and compared, so a page changed since is put again.
      if (isWritten(r.offset, r.data.length) && (await pagesEqual(blob, r.offset, r.data))) { resent += r.data.length; continue; }
      const md5 = createHash('md5').update(r.data).digest();
      const p = az(`Put Page at ${r.offset} of ${what}`, () => blob.uploadPages(r.data, r.offset, r.data.length, { conditions, transactionalContentMD5: md5, abortSignal: opts.signal }))
        .then(() => {
          put += r.data.length;
          ranges++;
          const now = Date.now();
          if (now - lastReport > 2000) {
            lastReport = now;
            const rate = put / Math.max(0.001, (now - t0) / 1000);
            log.info(`azure: ${humanBytes(put)} sent, ${humanBytes(rate)}/s, ${humanBytes(stats.bytes)} of ${humanBytes(rel.vhdSize)} read`);
          }
        }, (e: unknown) => { failure ??= e; });
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      if (inFlight.size >= parallel) await Promise.race(inFlight);
    }
    await Promise.allSettled([...inFlight]);
    if (failure) throw failure;
    opts.signal?.throwIfAborted();
    if (stats.sha256 !== rel.vhdSha256) {
      await blob.delete({ conditions }).catch(() => undefined);
      throw new KilnError(`the VHD of ${rel.name}@${rel.version} read ${stats.sha256}, the release says ${rel.vhdSha256}: the blob was deleted`, { where: { file: rel.vhdFile }, hint: 'the store was changed: kiln verify shows what; pull the release again' });
    }
    await az(`marking ${what} complete`, () => blob.setMetadata({ ...meta, [META.complete]: 'true', [META.sha256]: rel.vhdSha256 }, { conditions }));
  } finally {
    clearInterval(renew);
    await Promise.allSettled([...inFlight]);
    await lease.releaseLease().catch(() => undefined);
  }
  const seconds = (Date.now() - t0) / 1000;
  log.info(`azure: ${humanBytes(put)} in ${ranges} ranges sent${resent ? `, ${humanBytes(resent)} already there (read back and compared)` : ''}, ${humanBytes(stats.skipped)} of zeros skipped, in ${humanSeconds(seconds * 1000)}`);
  return { url: blob.url, blobName, existing: false, sent: put, skipped: stats.skipped, seconds };
}
