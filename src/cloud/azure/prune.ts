/**
 * Retention for Azure gallery image versions Kiln published (`kiln prune --cloud azure`): a dry run
 * unless told to apply. Only versions of the image definition tagged `kiln:image=<name>` with a release
 * digest are looked at, so nothing Kiln did not create is touched; the rule is src/cloud/retention.ts's.
 * A version outside it is deleted (a long-running operation), then the page blob it was made from, but
 * only when the blob's own metadata names the same release (Kiln uploaded it); its id is removed from
 * the release's signed metadata.
 */
import type { Logger } from '../../log.js';
import type { ReleaseStore } from '../../store/release-store.js';
import type { AzurePublishConfig } from '../../template/schema.js';
import { retention, storeFacts, type PruneRule, type Retention } from '../retention.js';
import { AZURE_TAG, computeClient } from './publish.js';
import { azureError, blobService, META } from './upload.js';

export interface AzurePruneDecision extends Retention { id: string; name: string; version: string; created: string; blob?: string }

export async function pruneAzure(store: ReleaseStore, name: string, cfg: AzurePublishConfig, opts: { rule: PruneRule; apply: boolean; logger: Logger; now?: Date }): Promise<AzurePruneDecision[]> {
  const facts = await storeFacts(store, name, opts.rule);
  const client = computeClient(cfg);
  const imageName = cfg.image_definition ?? name;
  const plan: AzurePruneDecision[] = [];
  try {
    for await (const v of client.galleryImageVersions.listByGalleryImage(cfg.resource_group, cfg.gallery, imageName)) {
      const tags = v.tags ?? {};
      if (tags[AZURE_TAG.image] !== name || !tags[AZURE_TAG.digest]) continue;
      const version = tags[AZURE_TAG.version] ?? '';
      const created = v.publishingProfile?.publishedDate ? new Date(v.publishingProfile.publishedDate).toISOString() : '';
      plan.push({ id: v.id ?? '', name: v.name ?? '', version, created, blob: v.storageProfile?.osDiskImage?.source?.uri, ...retention({ version, created }, facts, opts.rule, opts.now ?? new Date()) });
    }
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode === 404) return [];
    throw azureError(e, `listing the versions of ${cfg.gallery}/${imageName}`);
  }
  if (!opts.apply) return plan;
  const container = blobService({ accountUrl: `https://${cfg.storage_account}.blob.core.windows.net`, container: cfg.container }).getContainerClient(cfg.container);
  for (const d of plan.filter((x) => x.action === 'delete')) {
    try {
      await client.galleryImageVersions.beginDeleteAndWait(cfg.resource_group, cfg.gallery, imageName, d.name);
    } catch (e) {
      throw azureError(e, `deleting the gallery image version ${cfg.gallery}/${imageName}/${d.name}`);
    }
    let blobNote = 'no blob';
    const blobName = d.blob ? decodeURIComponent(new URL(d.blob).pathname.split('/').pop() ?? '') : '';
    if (blobName) {
      const b = container.getPageBlobClient(blobName);
      const props = await b.getProperties().catch(() => undefined);
      const digest = (await store.release(name, d.version))?.digest;
      if (props && digest && props.metadata?.[META.digest] === digest) {
        await b.delete().catch((e: unknown) => { throw azureError(e, `deleting the blob ${cfg.container}/${blobName}`); });
        blobNote = `its blob ${blobName}`;
      } else {
        blobNote = `not the blob ${blobName} (${props ? 'its metadata names no release of this version' : 'already gone'})`;
      }
    }
    opts.logger.info(`azure: deleted ${cfg.gallery}/${imageName}/${d.name} (${d.version}) and ${blobNote}`);
    await store.removeCloudIds(name, d.version, 'azure', { [cfg.location]: d.id });
  }
  return plan;
}
