/**
 * Retention for Compute Engine images Kiln published (`kiln prune --cloud gce`): a dry run unless told
 * to apply. Only images labelled `kiln-image=<name>` whose description names a release of that image
 * are looked at, so nothing Kiln did not create is touched; the rule is src/cloud/retention.ts's.
 *
 * An image outside the rule is retired in two steps, as Compute Engine intends: first DEPRECATED (the
 * family's newest image stops being it, new instances from it get a warning, the replacement is the
 * newest kept image), then, once it has been deprecated for the grace period (`--grace-days`, default
 * 7; 0 does both in one run), deleted, with any tarball of that release left in the bucket, and its path
 * removed from the release's signed metadata.
 */
import type { Logger } from '../../log.js';
import type { ReleaseStore } from '../../store/release-store.js';
import type { GcePublishConfig } from '../../template/schema.js';
import { retention, storeFacts, type PruneRule, type Retention } from '../retention.js';
import { GCE_LABEL, labelValue, parseGceDescription } from './names.js';
import { computeClients, imagePath, waitOperation, withRequestId } from './publish.js';
import { GCS_META, gceError, gcp, objectMetadata, objectName, storageClient } from './upload.js';

export interface GcePruneDecision extends Retention {
  image: string; version: string; created: string; status: string;
  /** What --apply does (or did): nothing, deprecate, or delete (deprecated long enough). */
  step: 'none' | 'deprecate' | 'delete' | 'wait';
  deprecated?: string;
}

export async function pruneGce(store: ReleaseStore, name: string, cfg: GcePublishConfig, opts: { rule: PruneRule; graceDays: number; apply: boolean; logger: Logger; now?: Date }): Promise<GcePruneDecision[]> {
  const facts = await storeFacts(store, name, opts.rule);
  const now = opts.now ?? new Date();
  const { images, operations } = computeClients(cfg);
  const project = cfg.project;
  try {
    const plan: GcePruneDecision[] = [];
    const selfLinks = new Map<string, string>();
    try {
      for await (const img of images.listAsync({ project, filter: `labels.${GCE_LABEL.image}=${labelValue(name)}` })) {
        const d = parseGceDescription(img.description);
        if (!d || d.name !== name || !img.labels?.[GCE_LABEL.digest] || !img.name) continue;
        const created = img.creationTimestamp ? new Date(img.creationTimestamp).toISOString() : '';
        const r = retention({ version: d.version, created }, facts, opts.rule, now);
        const dep = img.deprecated?.state && img.deprecated.state !== 'ACTIVE' ? img.deprecated : undefined;
        const since = dep?.deprecated ? Date.parse(dep.deprecated) : Number.NaN;
        const step: GcePruneDecision['step'] = r.action === 'keep' ? 'none'
          : !dep ? (opts.graceDays === 0 ? 'delete' : 'deprecate')
            : !Number.isFinite(since) || now.getTime() - since >= opts.graceDays * 86_400_000 ? 'delete' : 'wait';
        plan.push({ image: img.name, version: d.version, created, status: String(img.status ?? ''), ...r, step, ...(dep ? { deprecated: dep.deprecated ?? dep.state ?? '' } : {}) });
        selfLinks.set(img.name, img.selfLink ?? `https://compute.googleapis.com/compute/v1/${imagePath(project, img.name)}`);
      }
    } catch (e) {
      throw gceError(e, `listing the images of ${name} in ${project}`);
    }
    if (!opts.apply) return plan;
    const deadline = Date.now() + 30 * 60_000;
    // The replacement named on a deprecated image: the newest image kept that can be used.
    const kept = plan.filter((d) => d.action === 'keep' && d.status === 'READY' && !d.deprecated).sort((a, b) => b.created.localeCompare(a.created))[0];
    for (const d of plan) {
      const path = imagePath(project, d.image);
      if (d.step === 'deprecate' || (d.step === 'delete' && !d.deprecated)) {
        const op = await gcp(`deprecating ${path}`, () => withRequestId((requestId) => images.deprecate({
          project, image: d.image, requestId,
          deprecationStatusResource: { state: 'DEPRECATED', deprecated: now.toISOString(), ...(kept ? { replacement: selfLinks.get(kept.image) } : {}) },
        })));
        await waitOperation(operations, project, op, `deprecating ${path}`, deadline);
        d.deprecated = now.toISOString();
        opts.logger.info(`gce: deprecated ${path} (${d.version})${kept ? `, replaced by ${kept.image}` : ''}`);
      }
      if (d.step !== 'delete') continue;
      const op = await gcp(`deleting ${path}`, () => withRequestId((requestId) => images.delete({ project, image: d.image, requestId })));
      await waitOperation(operations, project, op, `deleting ${path}`, deadline);
      opts.logger.info(`gce: deleted ${path} (${d.version})`);
      await store.removeCloudIds(name, d.version, 'gce', { [project]: path });
      await deleteLeftoverObject(store, name, d.version, cfg, opts.logger);
    }
    return plan;
  } finally {
    await Promise.allSettled([images.close(), operations.close()]);
  }
}

/** The release's tarball, if it is still in the bucket (keep_object, or a run stopped before deleting it) and its metadata says it is that release's. */
async function deleteLeftoverObject(store: ReleaseStore, name: string, version: string, cfg: GcePublishConfig, log: Logger): Promise<void> {
  const digest = (await store.release(name, version))?.digest;
  if (!digest) return;
  const object = objectName(cfg.object_prefix ?? 'kiln/', { name, version, digest });
  const file = storageClient({ project: cfg.project, endpoint: cfg.storage_endpoint }).bucket(cfg.bucket).file(object);
  const m = await objectMetadata(file, `gs://${cfg.bucket}/${object}`);
  if (!m || (m.metadata as Record<string, string> | undefined)?.[GCS_META.digest] !== digest) return;
  await gcp(`deleting gs://${cfg.bucket}/${object}`, () => file.delete({ ifGenerationMatch: m.generation }));
  log.info(`gce: deleted gs://${cfg.bucket}/${object}, the tarball it was made from`);
}
