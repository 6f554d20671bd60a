/**
 * source.release: an earlier Kiln release as the parent of this image (vendor -> hardened base ->
 * applications). The parent is resolved through the store with kiln.yaml's trust policy, so a
 * revoked parent, a parent with a revoked ancestor, or an unsigned one when signatures are required
 * is refused (src/store/release-store.ts resolve). Its disk artifact is copied from a local store, or
 * downloaded from a registry, into Kiln's cache and hashed on the way: the copy is used only when its
 * sha256 is the one the release record gives, so what the child is built from is exactly what the
 * parent released. kiln.lock may pin the parent's digest (a locked build resolves by it). The tree is then read like a
 * vendor image's (src/image/ingest.ts); the child gets Kiln's own disk layout and identifiers.
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { commitEntry, entryTemp, intactEntry, removeDeadTemps } from '../cache-entry.js';
import { KilnError } from '../errors.js';
import { copyFileSparse } from '../fsio.js';
import { humanBytes, type Logger } from '../log.js';
import { checkAncestry, openStore, parseReleaseRef, trustFromConfig } from '../store/index.js';
import type { LockedRelease } from '../lock/file.js';
import type { ReleaseParent, ReleaseRoot, ReleaseRecord } from '../store/record.js';
import type { KilnConfig } from '../template/schema.js';
import type { InstalledPackage } from './debian.js';
import type { VerifiedImage } from './image.js';
import type { VendorLayout } from '../image/ingest.js';

/** The source record of a child build. */
export interface ReleaseSourceRecord {
  type: 'release';
  /** The reference as kiln.yaml wrote it (name@version, name@channel or name@sha256:…). */
  ref: string;
  store: string;
  parent: ReleaseParent;
  /** The upstream at the root of the chain (the parent's root, or the parent's own source). */
  root?: ReleaseRoot;
  /** From the parent up to the root: name@version of each release. */
  ancestry: string[];
  /** The parent's disk artifact the child was built from. */
  artifact: { format: string; sha256: string; size: number };
  /** Who signed the parent release (empty when unsigned). */
  signers: string[];
  verified: boolean;
  packages: InstalledPackage[];
  baseKey: string;
  baseSha256: string;
  /** The parent's SOURCE_DATE_EPOCH: the playbook's. */
  date: number;
  layout: VendorLayout;
  /** sha256 of the kiln.lock that pinned the parent, when one did. */
  lockSha256?: string;
}

/** Whether ref names the release by its version or digest (not through a channel). */
function isVersionOrDigest(ref: string, version: string): boolean {
  const { selector } = parseReleaseRef(ref);
  return selector === version || selector.startsWith('sha256:');
}

/** The upstream at the root of a parent's chain, from its record. */
export function rootOf(record: ReleaseRecord): ReleaseRoot | undefined {
  if (record.root) return record.root;
  const s = record.source as { type?: string; url?: string; sha256?: string; sha512?: string; mirror?: string; suite?: string; inReleaseSha256?: string };
  if (s.type === 'image' && s.url && s.sha256) return { kind: 'vendor-image', uri: s.url, digest: { sha256: s.sha256, ...(s.sha512 ? { sha512: s.sha512 } : {}) } };
  if (s.type === 'release') return undefined;
  if (s.mirror && s.suite && s.inReleaseSha256) return { kind: 'debian-archive', uri: `${s.mirror.replace(/\/$/, '')}/dists/${s.suite}/InRelease`, digest: { sha256: s.inReleaseSha256 } };
  return undefined;
}

export interface ResolvedParent {
  /** The verified copy of the parent's disk, as imageBaseTarball reads it. */
  image: Pick<VerifiedImage, 'file' | 'sha256' | 'url' | 'cached' | 'checks'>;
  parent: ReleaseParent;
  root?: ReleaseRoot;
  ancestry: string[];
  artifact: { format: string; sha256: string; size: number };
  signers: string[];
  sourceDateEpoch: number;
  store: string;
}

/**
 * The parent release, resolved with kiln.yaml's trust policy and its disk copied into the cache
 * (verified against the release record), as an image the ingest reads.
 */
export async function resolveParent(c: KilnConfig, dir: string, cacheDir: string, logger: Logger, onStatus?: (s: string) => void, pinned?: LockedRelease): Promise<ResolvedParent> {
  const cfg = c.source.release;
  if (!cfg) throw new Error('resolveParent: kiln.yaml has no source.release');
  const storeSpec = cfg.store ?? c.release.store;
  const store = await openStore(storeSpec, dir, { trust: await trustFromConfig(c.release.trust, dir), create: false });
  if (pinned && pinned.name !== parseReleaseRef(cfg.ref).name) throw new Error(`resolveParent: kiln.lock pins ${pinned.name}, kiln.yaml names ${cfg.ref}`);
  // kiln.lock pins the release by digest: the same lock builds on the same parent after a channel moves.
  const ref = pinned ? `${pinned.name}@${pinned.digest}` : cfg.ref;
  onStatus?.(`resolving ${cfg.ref}${pinned ? ` as kiln.lock pins it (${pinned.version}, ${pinned.digest.slice(0, 19)}…)` : ''} in ${store.location}`);
  // resolve refuses an untrusted, revoked or revoked-ancestor release (there is no force here): a lock does not exempt its parent.
  const r = await store.resolve(ref);
  if (pinned && r.version !== pinned.version) {
    throw new KilnError(`kiln.lock pins ${pinned.name}@${pinned.version} as ${pinned.digest}, but that digest is ${r.name}@${r.version} in ${store.location}`, { hint: 'the lock or the store was changed by hand: run `kiln lock --update` and review what it changes' });
  }
  if (pinned) {
    // Said, not acted on: the lock decides; `kiln lock --update` moves it.
    const now = await store.entry(cfg.ref).catch(() => undefined);
    if (now && now.digest !== pinned.digest) logger.warn(`${cfg.ref} is now ${now.name}@${now.version} (${now.digest.slice(0, 19)}…); kiln.lock pins ${pinned.version}: building on that. \`kiln lock --update\` moves the lock.`);
  }
  const remote = store.backend.remote;
  // From a registry every byte is a download: the qcow2 is the smallest disk the ingest reads.
  const preferred = cfg.format ? [cfg.format] : remote ? ['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx'] : ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx'];
  const a = preferred.map((f) => r.artifacts.find((x) => x.format === f)).find((x) => x !== undefined);
  if (!a) throw new KilnError(`${r.name}@${r.version} has no ${preferred.join(' or ')} artifact to build on`, { hint: `its formats: ${r.artifacts.map((x) => x.format).join(', ')}` });
  if (!remote && !existsSync(a.location)) throw new KilnError(`${r.name}@${r.version}: its ${a.format} (${a.location}) is missing from the store`, { hint: 'the store was changed after the release: kiln verify shows what else is damaged' });
  const entry = await store.entry(`${r.name}@${r.version}`);
  const images = join(cacheDir, 'images');
  mkdirSync(images, { recursive: true });
  removeDeadTemps(images);
  const file = join(images, `${a.sha256}.img`);
  const rec = join(images, `${a.sha256}.json`);
  const cached = await intactEntry(file, rec, logger);
  if (!cached) {
    const tmp = entryTemp(file);
    rmSync(tmp, { force: true });
    try {
      if (remote) {
        // resolve checked that this layer is the artifact the release record names; the download is hashed against the layer's digest.
        onStatus?.(`downloading ${a.file} of ${r.name}@${r.version} from ${store.location} (hashed on the way)`);
        await store.backend.downloadBlob(r.name, { mediaType: a.mediaType, digest: a.digest, size: a.size }, tmp, (done, total) => onStatus?.(`downloading ${a.file}: ${humanBytes(done)} of ${humanBytes(total)}`));
      } else {
        onStatus?.(`copying ${a.file} from the parent release (hashed on the way)`);
        const got = await copyFileSparse(a.location, tmp, { hash: true, reflink: false });
        if (got.sha256 !== a.sha256) {
          throw new KilnError(`the ${a.format} of ${r.name}@${r.version} in the store is not the one its release record names`, {
            detail: `record: sha256 ${a.sha256}\nfile:   sha256 ${got.sha256} (${a.location})`, hint: 'the store was changed after the release: nothing was used; kiln verify shows what else is damaged',
          });
        }
      }
      await commitEntry(tmp, file, rec, { release: `${r.name}@${r.version}`, digest: r.digest, created: new Date().toISOString() });
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  // A pinned parent is resolved by digest; the channel it was named by still goes into the record.
  const channel = r.channel ?? (pinned && !isVersionOrDigest(cfg.ref, r.version) ? parseReleaseRef(cfg.ref).selector : undefined);
  const parent: ReleaseParent = { name: r.name, version: r.version, digest: r.digest, ...(channel ? { channel } : {}) };
  // The parent's record names one level up; the store walks the chain to its root.
  const names = (await checkAncestry(store, r.digest, r.name)).chain.map((p) => `${p.name}@${p.version}`);
  return {
    image: {
      file, url: `kiln-release:${r.name}@${r.version}`, sha256: a.sha256, cached,
      checks: [`sha256 of its ${a.format} in release ${r.name}@${r.version} (${r.digest})${r.signers.length ? `, signed by ${r.signers.join(', ')}` : ', unsigned'}`],
    },
    parent, root: rootOf(entry.record), ancestry: names, artifact: { format: a.format, sha256: a.sha256, size: a.size }, signers: r.signers,
    sourceDateEpoch: r.sourceDateEpoch, store: store.location,
  };
}
