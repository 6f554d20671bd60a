/**
 * Which cloud images of an image to keep (pure: the releases' order and channels come from the store),
 * shared by `kiln prune --cloud aws|azure`. A cloud image is kept when its version is among the newest
 * N releases of the image in the store, when a channel points at it, when it is younger than D days,
 * or when its version is not in the store at all (Kiln cannot place it, so it leaves it).
 */
import { KilnError } from '../errors.js';
import type { ReleaseStore } from '../store/release-store.js';

export interface PruneRule { keep: number; keepDays: number }

export interface Retention { action: 'keep' | 'delete'; why: string }

export interface StoreFacts { releases: { version: string; date: string }[]; channelTargets: Map<string, string[]> }

export function retention(item: { version: string; created: string }, facts: StoreFacts, rule: PruneRule, now: Date): Retention {
  const newest = [...facts.releases].sort((a, b) => b.date.localeCompare(a.date) || b.version.localeCompare(a.version, undefined, { numeric: true })).slice(0, rule.keep).map((r) => r.version);
  const ageDays = item.created ? (now.getTime() - Date.parse(item.created)) / 86_400_000 : 0;
  const channels = facts.channelTargets.get(item.version);
  if (!facts.releases.some((r) => r.version === item.version)) return { action: 'keep', why: 'its version is not in the store' };
  if (channels?.length) return { action: 'keep', why: `channel ${channels.join(', ')}` };
  if (newest.includes(item.version)) return { action: 'keep', why: `among the newest ${rule.keep}` };
  if (rule.keepDays > 0 && ageDays < rule.keepDays) return { action: 'keep', why: `younger than ${rule.keepDays} days` };
  return { action: 'delete', why: `older than the newest ${rule.keep}${rule.keepDays > 0 ? ` and ${rule.keepDays} days` : ''}, on no channel` };
}

/** The image's releases and channel targets, and the rule checked. */
export async function storeFacts(store: ReleaseStore, name: string, rule: PruneRule): Promise<StoreFacts> {
  if (!Number.isInteger(rule.keep) || rule.keep < 1) throw new KilnError('prune keeps at least the newest release: --keep must be 1 or more', { exitCode: 2 });
  const releases = (await store.list(name)).map((r) => ({ version: r.version, date: r.date }));
  const channelTargets = new Map<string, string[]>();
  for (const c of await store.channelList(name)) channelTargets.set(c.version, [...(channelTargets.get(c.version) ?? []), c.channel]);
  return { releases, channelTargets };
}
