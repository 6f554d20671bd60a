/**
 * A release as an Azure Compute Gallery image version: the release's fixed VHD uploaded as a page blob
 * (upload.ts), then `galleryImageVersions.beginCreateOrUpdate` from that blob, replicated to the regions
 * kiln.yaml names, through the official `@azure/arm-compute` SDK with `@azure/identity`'s
 * DefaultAzureCredential (environment, workload identity, managed identity, Azure CLI, …).
 *
 * - The image definition is created when missing (Linux, generalized, Hyper-V generation V2 for a disk
 *   with an ESP, V1 otherwise, the identifier from kiln.yaml); an existing one of another generation
 *   is refused: a gallery image's generation never changes.
 * - The version is named x.y.z from the Kiln version (release-0.1.0 → 0.1.0, galleryVersionName); the
 *   exact version, the release digest, the commit and the image name are tags.
 * - Idempotent: a version of that name whose `kiln:release-digest` tag is the release's is recorded
 *   and nothing is sent; with another digest, or without Kiln's tag, it is an error.
 * - Fit for Azure first (src/cloud/fitness.ts): Hyper-V drivers, an agent or cloud-init for Azure, root
 *   by UUID, and a VHD whose virtual size is a whole number of MiB.
 * The version's resource id is recorded in the image's signed metadata (`kiln resolve --cloud azure`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ComputeManagementClient } from '@azure/arm-compute';
import { DefaultAzureCredential } from '@azure/identity';
import { KilnError } from '../../errors.js';
import { humanSeconds, type Logger } from '../../log.js';
import type { ReleaseStore } from '../../store/release-store.js';
import { checkFit, FIX_HINT } from '../fitness.js';
import { checkAzureVhdSize, galleryVersionName } from './page-ranges.js';
import { az, azureError, uploadVhdPageBlob, type VhdToUpload } from './upload.js';
import type { AzurePublishConfig } from '../../template/schema.js';

export type { AzurePublishConfig };

export const AZURE_TAG = { version: 'ImageVersion', image: 'kiln:image', digest: 'kiln:release-digest', commit: 'kiln:commit' } as const;

export interface AzurePublished { location: string; versionId: string; version: string; existing: boolean; blobUrl: string; sent: number; skipped: number }

export async function publishReleaseToAzure(store: ReleaseStore, ref: string, cfg: AzurePublishConfig, opts: { logger: Logger; parallel?: number; signal?: AbortSignal }): Promise<AzurePublished> {
  // Not hashed here: the upload hashes the very bytes it sends and compares them with the release's digest.
  const r = await store.resolve(ref, { format: 'vhd', verifyArtifacts: false });
  const vhd = r.artifact;
  if (!vhd) throw new KilnError(`${ref} has no vhd artifact`, { hint: 'Azure takes a fixed VHD: add vhd to formats in kiln.yaml and release a new version' });
  if (store.backend.remote) throw new KilnError(`${ref} is in a remote store: pull it first`, { hint: `kiln pull ${ref} --from <store>` });
  checkAzureVhdSize(vhd.size);
  const scratch = mkdtempSync(join(tmpdir(), 'kiln-publish-'));
  let fit;
  try {
    fit = await checkFit(vhd.location, 'azure', scratch, opts.logger);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (fit.problems.length) throw new KilnError(`${r.name}@${r.version} is not fit for Azure`, { detail: fit.problems.join('\n'), hint: FIX_HINT.azure });
  const rel: VhdToUpload & { generation: 'V1' | 'V2' } = {
    name: r.name, version: r.version, digest: r.digest, commit: r.commit,
    vhdFile: vhd.location, vhdSha256: vhd.sha256, vhdSize: vhd.size,
    generation: fit.bootMode === 'legacy-bios' ? 'V1' : 'V2',
  };
  return publishVhdToAzure(store, rel, cfg, opts);
}

/** The Compute client of publish.azure, with DefaultAzureCredential. */
export function computeClient(cfg: AzurePublishConfig): ComputeManagementClient {
  // A custom authority (AZURE_AUTHORITY_HOST: Azure Stack, a private cloud) is used as given.
  const credential = new DefaultAzureCredential({ disableInstanceDiscovery: Boolean(process.env.AZURE_AUTHORITY_HOST) });
  // The token's scope stays the SDK's (Resource Manager's); arm_endpoint only moves where requests go.
  return new ComputeManagementClient(credential, cfg.subscription, cfg.arm_endpoint ? { endpoint: cfg.arm_endpoint } : {});
}

const notFound = (e: unknown) => (e as { statusCode?: number }).statusCode === 404;

/** Uploads the VHD, makes sure the image definition exists, creates the version, records it. */
export async function publishVhdToAzure(store: ReleaseStore, rel: VhdToUpload & { generation: 'V1' | 'V2' }, cfg: AzurePublishConfig, opts: { logger: Logger; parallel?: number; signal?: AbortSignal }): Promise<AzurePublished> {
  const log = opts.logger;
  const client = computeClient(cfg);
  const rg = cfg.resource_group;
  const imageName = cfg.image_definition ?? rel.name;
  const versionName = galleryVersionName(rel.version);
  const what = `gallery image version ${cfg.gallery}/${imageName}/${versionName}`;
  const t0 = Date.now();

  const existing = await client.galleryImageVersions.get(rg, cfg.gallery, imageName, versionName).catch((e: unknown) => {
    if (notFound(e)) return undefined;
    throw azureError(e, `reading ${what}`);
  });
  if (existing) {
    const digest = existing.tags?.[AZURE_TAG.digest];
    if (digest !== rel.digest) {
      throw new KilnError(`${what} exists, ${digest ? `made from another release (${digest})` : 'and Kiln did not make it (no kiln:release-digest tag)'}`, { hint: `gallery versions are x.y.z: ${rel.version} maps to ${versionName}; a release is never published twice under one version` });
    }
    if (existing.provisioningState !== 'Succeeded') throw new KilnError(`${what} is ${existing.provisioningState ?? 'in an unknown state'}`, { hint: 'wait for it, or delete it and publish again' });
    log.info(`azure: ${what} is already there for this release: nothing sent`);
    const id = existing.id ?? '';
    await store.addCloudIds(`${rel.name}@${rel.version}`, { azure: { [cfg.location]: id } });
    return { location: cfg.location, versionId: id, version: versionName, existing: true, blobUrl: existing.storageProfile?.osDiskImage?.source?.uri ?? '', sent: 0, skipped: 0 };
  }

  const blob = await uploadVhdPageBlob(rel, { accountUrl: `https://${cfg.storage_account}.blob.core.windows.net`, container: cfg.container }, opts);

  const image = await client.galleryImages.get(rg, cfg.gallery, imageName).catch((e: unknown) => {
    if (notFound(e)) return undefined;
    throw azureError(e, `reading the gallery image definition ${cfg.gallery}/${imageName}`);
  });
  if (image && image.hyperVGeneration && image.hyperVGeneration !== rel.generation) {
    throw new KilnError(`the gallery image definition ${cfg.gallery}/${imageName} is Hyper-V generation ${image.hyperVGeneration}, and this disk needs ${rel.generation} (${rel.generation === 'V2' ? 'it boots UEFI' : 'it has no EFI system partition'})`, { hint: 'name another image definition in publish.azure.image_definition' });
  }
  if (!image) {
    log.info(`azure: creating the image definition ${cfg.gallery}/${imageName} (Linux, generalized, ${rel.generation})`);
    await az(`creating the gallery image definition ${cfg.gallery}/${imageName}`, () => client.galleryImages.beginCreateOrUpdateAndWait(rg, cfg.gallery, imageName, {
      location: cfg.location, osType: 'Linux', osState: 'Generalized', hyperVGeneration: rel.generation, architecture: 'x64',
      identifier: { publisher: cfg.publisher, offer: cfg.offer ?? rel.name, sku: cfg.sku },
      tags: { [AZURE_TAG.image]: rel.name },
    }));
  }
  const storageAccountId = `/subscriptions/${cfg.subscription}/resourceGroups/${cfg.storage_resource_group ?? rg}/providers/Microsoft.Storage/storageAccounts/${cfg.storage_account}`;
  log.info(`azure: creating ${what} from ${blob.blobName}, replicated to ${cfg.regions.join(', ')}`);
  const created = await az(`creating ${what}`, () => client.galleryImageVersions.beginCreateOrUpdateAndWait(rg, cfg.gallery, imageName, versionName, {
    location: cfg.location,
    tags: { [AZURE_TAG.version]: rel.version, [AZURE_TAG.image]: rel.name, [AZURE_TAG.digest]: rel.digest, [AZURE_TAG.commit]: rel.commit },
    storageProfile: { osDiskImage: { source: { uri: blob.url, storageAccountId } } },
    publishingProfile: { targetRegions: cfg.regions.map((name) => ({ name, regionalReplicaCount: 1 })), excludeFromLatest: false },
  }));
  if (created.provisioningState !== 'Succeeded') throw new KilnError(`${what} ended ${created.provisioningState ?? 'in an unknown state'}`);
  const id = created.id ?? '';
  log.info(`azure: ${what} created in ${humanSeconds(Date.now() - t0)}: ${id}`);
  await store.addCloudIds(`${rel.name}@${rel.version}`, { azure: { [cfg.location]: id } });
  return { location: cfg.location, versionId: id, version: versionName, existing: false, blobUrl: blob.url, sent: blob.sent, skipped: blob.skipped };
}
