/**
 * source.image: a vendor's disk image as the trusted upstream. It is downloaded into Kiln's cache
 * and used only once it verifies by every check kiln.yaml and kiln.lock configure, and by one at least:
 *   - a pinned digest (source.image.sha256 / sha512 in kiln.yaml);
 *   - the sha256 and sha512 kiln.lock pins (written by `kiln lock` after the image verified);
 *   - a checksum file (SHA256SUMS, SHA512SUMS) signed by a key pinned in source.image.keys.
 * A checksum file alone is never enough (whoever serves it chooses it), nor is the transport.
 * `verify: false` is the explicit opt-out, recorded in the release as for the archive.
 *
 * The verified file is kept in <cache>/images/<sha256>.img and checked against its digest on every
 * use (src/cache-entry.ts), so a damaged or swapped cache entry is fetched again, never used.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { intactEntry, removeDeadTemps, entryTemp, commitEntry } from '../cache-entry.js';
import { isAmiUrl, parseAmiUrl } from '../cloud/aws/ami-url.js';
import { KilnError } from '../errors.js';
import { humanBytes, type Logger } from '../log.js';
import { ingestImage, type VendorLayout } from '../image/ingest.js';
import type { InstalledPackage } from './debian.js';
import type { ImageSourceConfig } from '../template/schema.js';
import { checksumFor, parseChecksums, readPinnedKeys, verifyChecksumFile } from './checksums.js';

export type { ImageSourceConfig };

/** How an image was verified, for the release record and provenance. */
export interface ImageTrust {
  url: string;
  sha256: string;
  sha512: string;
  size: number;
  verified: boolean;
  /** One line per check that passed, e.g. "sha512 pinned in kiln.yaml", "SHA512SUMS signed by ABCD…". */
  checks: string[];
  /** Fingerprint of the pinned key that signed the checksum file. */
  signer?: string;
  /** An AMI upstream (ec2:// url): the image the url resolved to, and its owner. */
  ami?: { region: string; imageId: string; name: string; owner: string; created: string };
}

export interface VerifiedImage extends ImageTrust { file: string; cached: boolean }

const MAX_CHECKSUM_BYTES = 4 << 20;

/** An http(s) or file URL, or a path relative to `base`'s directory, as an absolute URL. */
export function relativeUrl(ref: string, base: string): string {
  return new URL(ref, base).toString();
}

/** A URL as logs and records show it: without user name or password. */
export function shownUrl(u: string): string {
  const url = new URL(u);
  url.username = '';
  url.password = '';
  return url.toString();
}

async function openUrl(url: string, what: string): Promise<{ body: Readable; size?: number }> {
  const u = new URL(url);
  if (u.protocol === 'file:') {
    const path = fileURLToPath(u);
    if (!existsSync(path) || !statSync(path).isFile()) throw new KilnError(`${what} not found: ${path}`, { hint: 'check source.image in kiln.yaml' });
    return { body: createReadStream(path), size: statSync(path).size };
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new KilnError(`${what}: ${u.protocol} URLs are not supported (${shownUrl(url)})`, { hint: 'use https://, http:// or file://' });
  let res: Response;
  try {
    res = await fetch(u, { redirect: 'follow' });
  } catch (e) {
    throw new KilnError(`cannot fetch ${what} ${shownUrl(url)}: ${(e as Error).message}${(e as { cause?: Error }).cause ? ` (${(e as { cause: Error }).cause.message})` : ''}`, { hint: 'check the URL and the network' });
  }
  if (!res.ok || !res.body) throw new KilnError(`cannot fetch ${what} ${shownUrl(url)}: HTTP ${res.status} ${res.statusText}`, { hint: 'check source.image in kiln.yaml' });
  const len = Number(res.headers.get('content-length'));
  return { body: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), size: Number.isFinite(len) && len > 0 ? len : undefined };
}

/** A small file (checksum file, signature) into memory, refusing anything implausibly large. */
export async function fetchSmall(url: string, what: string): Promise<Buffer> {
  const { body } = await openUrl(url, what);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += (c as Buffer).length;
    if (n > MAX_CHECKSUM_BYTES) { body.destroy(); throw new KilnError(`${what} ${shownUrl(url)} is larger than ${humanBytes(MAX_CHECKSUM_BYTES)}: not a checksum file or signature`); }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Downloads url to `dest` (a new file), hashing it on the way. */
async function download(url: string, dest: string, onStatus?: (s: string) => void): Promise<{ sha256: string; sha512: string; size: number }> {
  const { body, size } = await openUrl(url, 'image');
  const h256 = createHash('sha256');
  const h512 = createHash('sha512');
  let n = 0;
  let last = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h256.update(chunk);
      h512.update(chunk);
      n += chunk.length;
      if (onStatus && Date.now() - last > 500) { last = Date.now(); onStatus(`downloading the image: ${humanBytes(n)}${size ? ` of ${humanBytes(size)}` : ''}`); }
      cb(null, chunk);
    },
  });
  try {
    await pipeline(body, tap, createWriteStream(dest, { flags: 'wx' }));
  } catch (e) {
    rmSync(dest, { force: true });
    if (e instanceof KilnError) throw e;
    throw new KilnError(`downloading ${shownUrl(url)} failed: ${(e as Error).message}`, { hint: 'check the network and run the build again' });
  }
  return { sha256: h256.digest('hex'), sha512: h512.digest('hex'), size: n };
}

export interface ImageRequest {
  config: ImageSourceConfig;
  /** kiln.yaml's directory (key files are relative to it). */
  dir: string;
  cacheDir: string;
  logger: Logger;
  onStatus?: (s: string) => void;
  /** The digests kiln.lock pins (upstream.image), checked like kiln.yaml's pins; for an AMI, also the image id it resolved to. */
  locked?: { sha256: string; sha512: string; ami?: string };
}

/** What the configured checks expect, before the image is read: pins, and the signed checksum file's digest. */
async function expectations(r: ImageRequest): Promise<{ checks: { what: string; algorithm: 'sha256' | 'sha512'; hex: string }[]; signer?: string; tried: string[] }> {
  const c = r.config;
  const checks: { what: string; algorithm: 'sha256' | 'sha512'; hex: string }[] = [];
  const tried: string[] = [];
  if (c.sha256) checks.push({ what: 'sha256 pinned in kiln.yaml', algorithm: 'sha256', hex: c.sha256.toLowerCase() });
  if (c.sha512) checks.push({ what: 'sha512 pinned in kiln.yaml', algorithm: 'sha512', hex: c.sha512.toLowerCase() });
  if (r.locked) {
    checks.push({ what: 'sha256 pinned in kiln.lock', algorithm: 'sha256', hex: r.locked.sha256 });
    checks.push({ what: 'sha512 pinned in kiln.lock', algorithm: 'sha512', hex: r.locked.sha512 });
  }
  let signer: string | undefined;
  if (c.checksums) {
    const sumsUrl = relativeUrl(c.checksums, c.url);
    const shown = shownUrl(sumsUrl);
    if (!c.keys.length) {
      throw new KilnError(`source.image.checksums is set but source.image.keys is empty: an unsigned checksum file proves nothing`, { hint: 'pin the vendor\'s signing key in source.image.keys, or pin the digest itself in source.image.sha512' });
    }
    r.onStatus?.(`fetching ${basename(new URL(sumsUrl).pathname)}`);
    const file = await fetchSmall(sumsUrl, 'checksum file');
    const sigUrl = c.signature ? relativeUrl(c.signature, c.url) : undefined;
    const signature = sigUrl ? await fetchSmall(sigUrl, 'signature') : undefined;
    const keys = await readPinnedKeys(c.keys.map((k) => {
      const path = resolve(r.dir, k);
      if (!existsSync(path)) throw new KilnError(`source.image.keys: key file not found: ${k}`, { hint: `expected a file relative to ${r.dir}` });
      return { file: k, bytes: readFileSync(path) };
    }));
    const signed = await verifyChecksumFile({ file, shown, signature, signatureShown: sigUrl ? shownUrl(sigUrl) : undefined, keys });
    signer = signed.signer;
    const name = c.checksum_name ?? decodeURIComponent(basename(new URL(c.url).pathname));
    const entry = checksumFor(parseChecksums(signed.text, shown), name, shown);
    checks.push({ what: `${entry.algorithm} from ${basename(new URL(sumsUrl).pathname)} signed by ${signer}`, algorithm: entry.algorithm, hex: entry.hex });
  }
  if (!c.sha256) tried.push('no sha256 pinned in kiln.yaml');
  if (!c.sha512) tried.push('no sha512 pinned in kiln.yaml');
  if (!c.checksums && !isAmiUrl(c.url)) tried.push('no signed checksum file (source.image.checksums + keys)');
  if (!r.locked) tried.push('no kiln.lock pinning the image (`kiln lock` writes one from an image that verifies)');
  return { checks, signer, tried };
}

/**
 * The verified image: from the cache when an entry with the expected digest is intact, else
 * downloaded, checked and then cached. Every configured check must pass; with none configured the
 * image is refused unless verify is false.
 */
export async function fetchVerifiedImage(r: ImageRequest): Promise<VerifiedImage> {
  const c = r.config;
  if (isAmiUrl(c.url)) return fetchVerifiedAmi(r);
  const { checks, signer, tried } = await expectations(r);
  if (!checks.length && c.verify) {
    throw new KilnError(`the image ${shownUrl(c.url)} cannot be verified: nothing to check it against`, {
      detail: tried.join('\n'),
      hint: 'pin its digest (source.image.sha512: <sha512sum of the file>), or name the vendor\'s signed checksum file (source.image.checksums, signature, keys); '
        + 'to use it unverified on purpose, set source.image.verify: false (recorded in the release)',
    });
  }
  if (!c.verify) r.logger.warn(`source.image.verify is false: ${shownUrl(c.url)} is used as downloaded; whoever serves it chooses the image. The release records verified: false.`);
  const dir = join(r.cacheDir, 'images');
  mkdirSync(dir, { recursive: true });
  removeDeadTemps(dir);
  // A cache entry is named by its sha256; reuse it only when a check names that exact digest.
  const want256 = checks.find((k) => k.algorithm === 'sha256')?.hex;
  if (want256) {
    const file = join(dir, `${want256}.img`);
    const rec = join(dir, `${want256}.json`);
    if (await intactEntry(file, rec, r.logger)) {
      const meta = JSON.parse(readFileSync(rec, 'utf8')) as { sha512: string; sha256: string; size: number };
      const result = judge(c.url, meta, checks, c.verify, signer);
      return { ...result, file, cached: true };
    }
  }
  const tmp = entryTemp(join(dir, 'download'));
  rmSync(tmp, { force: true });
  r.onStatus?.('downloading the image');
  const got = await download(c.url, tmp, r.onStatus);
  try {
    const result = judge(c.url, got, checks, c.verify, signer);
    const file = join(dir, `${got.sha256}.img`);
    await commitEntry(tmp, file, join(dir, `${got.sha256}.json`), { url: shownUrl(c.url), sha512: got.sha512, created: new Date().toISOString() });
    return { ...result, file, cached: false };
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * An AMI upstream (src/cloud/aws/upstream.ts): refused unless the pinned owner owns it; its disk is
 * read once per AMI id (an AMI never changes) into the image cache, then checked against kiln.yaml's
 * and kiln.lock's digest pins like any image.
 */
async function fetchVerifiedAmi(r: ImageRequest): Promise<VerifiedImage> {
  const c = r.config;
  const { checks } = await expectations(r);
  if (!c.owner) throw new KilnError('source.image.url names an AMI but source.image.owner is not set', { hint: 'pin the AWS account that publishes the image in source.image.owner' });
  if (!c.verify) throw new KilnError('source.image.verify: false does not apply to an AMI: it is trusted by its pinned owner', { hint: 'remove verify: false' });
  const ref = parseAmiUrl(c.url);
  r.onStatus?.('looking up the AMI');
  // The AWS SDK is loaded here, by the one build that reads an AMI, not by every command (src/cli/lazy.ts).
  const { findAmi, readAmi } = await import('../cloud/aws/upstream.js');
  // Locked: the AMI kiln.lock names, even when a newer image now matches the name pattern.
  const pinned = r.locked?.ami;
  if (pinned && ref.id && ref.id !== pinned) throw new KilnError(`kiln.lock pins ${pinned}, but source.image.url names ${ref.id}`, { hint: 'run kiln lock --update to pin the image kiln.yaml names' });
  const ami = await findAmi(pinned ? { region: ref.region, id: pinned } : ref, c.owner);
  if (pinned && ref.namePattern) {
    const newest = await findAmi(ref, c.owner).catch(() => undefined);
    if (newest && newest.imageId !== pinned) r.logger.warn(`${newest.imageId} (${newest.name}) is now the newest image matching ${ref.namePattern}; kiln.lock keeps ${pinned}: kiln lock --update moves to it`);
  }
  const trust = [`owner ${c.owner} of ${ami.imageId} pinned in kiln.yaml`, ...checks.map((k) => k.what)];
  const amiRec = { region: ami.region, imageId: ami.imageId, name: ami.name, owner: ami.ownerId, created: ami.created };
  const dir = join(r.cacheDir, 'images');
  mkdirSync(dir, { recursive: true });
  removeDeadTemps(dir);
  // An AMI id names fixed content: the disk read from it before is reused while its entry is intact.
  const index = join(dir, `${ami.region}.${ami.imageId}.ami`);
  if (existsSync(index)) {
    const sha = readFileSync(index, 'utf8').trim();
    if (/^[0-9a-f]{64}$/.test(sha) && await intactEntry(join(dir, `${sha}.img`), join(dir, `${sha}.json`), r.logger)) {
      const meta = JSON.parse(readFileSync(join(dir, `${sha}.json`), 'utf8')) as { sha512: string; sha256: string; size: number };
      const j = judge(c.url, meta, checks, true);
      return { ...j, checks: trust, verified: true, ami: amiRec, file: join(dir, `${sha}.img`), cached: true };
    }
  }
  const tmp = entryTemp(join(dir, 'ami'));
  rmSync(tmp, { force: true });
  try {
    r.onStatus?.(`reading ${ami.imageId}'s disk through the EBS direct APIs`);
    await readAmi(ami, tmp, { logger: r.logger, onStatus: r.onStatus });
    const h256 = createHash('sha256');
    const h512 = createHash('sha512');
    let size = 0;
    for await (const chunk of createReadStream(tmp, { highWaterMark: 4 << 20 })) { h256.update(chunk as Buffer); h512.update(chunk as Buffer); size += (chunk as Buffer).length; }
    const got = { sha256: h256.digest('hex'), sha512: h512.digest('hex'), size };
    const j = judge(c.url, got, checks, true);
    const file = join(dir, `${got.sha256}.img`);
    await commitEntry(tmp, file, join(dir, `${got.sha256}.json`), { url: c.url, ami: amiRec, sha512: got.sha512, created: new Date().toISOString() });
    writeFileSync(index, `${got.sha256}\n`);
    return { ...j, checks: trust, verified: true, ami: amiRec, file, cached: false };
  } finally {
    rmSync(tmp, { force: true });
  }
}

function judge(url: string, got: { sha256: string; sha512: string; size: number }, checks: { what: string; algorithm: 'sha256' | 'sha512'; hex: string }[], verify: boolean, signer?: string): ImageTrust {
  const failed = checks.filter((k) => got[k.algorithm] !== k.hex);
  if (failed.length) {
    throw new KilnError(`the image ${shownUrl(url)} does not match: ${failed.map((k) => k.what).join('; ')}`, {
      detail: failed.map((k) => `${k.what}: expected ${k.hex}\n  the file's ${k.algorithm}: ${got[k.algorithm]}`).join('\n'),
      hint: 'the file is not the one the pins and the signed checksums name: it was changed, cut short or replaced. Nothing was used.',
    });
  }
  return { url: shownUrl(url), sha256: got.sha256, sha512: got.sha512, size: got.size, verified: verify && checks.length > 0, checks: checks.map((k) => k.what), ...(signer ? { signer } : {}) };
}

/** The source record of an image build: what was verified, the vendor's layout, the base tree. */
export interface ImageSourceRecord extends ImageTrust {
  type: 'image';
  /** What the file was (format, archive member). */
  format: string;
  layout: VendorLayout;
  /** The vendor tree's packages (dpkg database), before the playbook. */
  packages: InstalledPackage[];
  /** Cache key and sha256 of the base tree tarball read from the image. */
  baseKey: string;
  baseSha256: string;
  /** The base's date (mtime of the vendor's dpkg status): the playbook's SOURCE_DATE_EPOCH. */
  date: number;  /** sha256 of the kiln.lock that pinned the image, when one did. */
  lockSha256?: string;
}

/** Bumped when what ingestImage writes changes, so older base entries are not reused. */
const INGEST_VERSION = 2;

/**
 * The base tree tarball of a verified image, from <cache>/base/<key>.tar when intact (its record
 * carries the layout and date), else read from the image (src/image/ingest.ts) and cached.
 */
export async function imageBaseTarball(img: Pick<VerifiedImage, 'file' | 'sha256' | 'url'>, config: Pick<ImageSourceConfig, 'format'>, cacheDir: string, workDir: string, logger: Logger): Promise<{ tar: string; key: string; sha256: string; cached: boolean; layout: VendorLayout; date: number }> {
  const key = createHash('sha256').update(JSON.stringify({ v: INGEST_VERSION, image: img.sha256, format: config.format ?? null })).digest('hex');
  const dir = join(cacheDir, 'base');
  mkdirSync(dir, { recursive: true });
  const tar = join(dir, `${key}.tar`);
  const record = join(dir, `${key}.json`);
  if (await intactEntry(tar, record, logger)) {
    const r = JSON.parse(readFileSync(record, 'utf8')) as { sha256: string; layout: VendorLayout; date: number };
    return { tar, key, sha256: r.sha256, cached: true, layout: r.layout, date: r.date };
  }
  removeDeadTemps(dir);
  const tmp = entryTemp(tar);
  const scratch = join(workDir, 'ingest');
  try {
    const got = await ingestImage({ file: img.file, shown: img.url, format: config.format, scratch, out: tmp, logger });
    const entry = await commitEntry(tmp, tar, record, { image: img.url, imageSha256: img.sha256, layout: got.layout, date: got.date, created: new Date().toISOString() });
    return { tar, key, sha256: entry.sha256, cached: false, layout: got.layout, date: got.date };
  } finally {
    rmSync(tmp, { force: true });
    rmSync(scratch, { recursive: true, force: true });
  }
}
