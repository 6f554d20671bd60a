/** formats: every format kiln.yaml asks for, written from the one raw disk (src/formats/registry.ts), or taken from the step cache. */
import { join } from 'node:path';
import { mkdir, stat } from 'node:fs/promises';
import { writeFormats, type Artifact } from '../../formats/index.js';
import { artifactFileName } from '../../formats/names.js';
import { formatMediaType } from '../../formats/registry.js';
import { humanBytes } from '../../log.js';
import { placeFromCache } from '../step-cache.js';
import { DISK_FILE } from './disk.js';
import { step } from '../context.js';
import type { StagedBlob } from '../../store/backend.js';
import { buildStore, releasing } from './release-store.js';

/** A format's file in its cache entry. */
export const FORMAT_FILE = 'artifact';

export const formatsStep = step({
  name: 'formats',
  describe: 'write every format asked for from the one raw disk',
  reads: ['name', 'formats', 'disk', 'vm', 'description'],
  needs: ['version', 'disk'],
  uses: ['cache', 'provision', 'seal', 'packages'],
  provides: ['artifacts'],
  mayProvide: ['staged'],
  async run(ctx, p, signal) {
    const c = ctx.template.config;
    const v = ctx.version;
    const cache = ctx.cache;
    // A release to a local store: each artifact is copied into the store (hashed on the way) as soon
    // as it is written, while the CPU-bound conversions of the others run; the release step renames.
    const store = releasing(ctx) ? await buildStore(ctx) : undefined;
    const staged = store && !store.backend.remote ? { store, blobs: new Map<string, StagedBlob>() } : undefined;
    if (staged) ctx.staged = staged;
    const staging: Promise<void>[] = [];
    const stage = async (f: string, file: string): Promise<void> => {
      const b = await staged?.store.stage(file, signal);
      if (b) staged?.blobs.set(f, b);
    };
    const fromCache = new Map<string, Artifact>();
    if (cache?.formats.size) {
      await mkdir(ctx.stagingDir, { recursive: true });
      for (const [f, hit] of cache.formats) {
        const file = join(ctx.stagingDir, artifactFileName(c.name, v.version, f));
        await placeFromCache(hit.file(FORMAT_FILE), file);
        const size = (await stat(file)).size;
        if (size !== hit.data.size) throw new Error(`cached ${f} is ${size} bytes, its entry says ${hit.data.size}`);
        fromCache.set(f, { format: f, file, size, sha256: hit.data.sha256, mediaType: formatMediaType(f) });
        if (staged) {
          const s = stage(f, file);
          s.catch(() => undefined); // awaited below
          staging.push(s);
        }
      }
      p.log(`from cache: ${[...fromCache.keys()].join(', ')}`);
    }
    const missing = c.formats.filter((f) => !fromCache.has(f));
    let written: Artifact[] = [];
    let settled: PromiseSettledResult<void>[] = [];
    try {
      written = missing.length ? await writeFormats(missing, {
        raw: ctx.disk.raw, outDir: ctx.stagingDir, name: c.name, version: v.version, sourceDateEpoch: v.sourceDateEpoch,
        firmware: c.disk.firmware, cpus: c.vm.cpus, memoryMiB: c.vm.memory_mib, description: c.description, logger: ctx.logger,
        ...(staged ? { onWritten: stage } : {}),
      }) : [];
    } finally {
      // No copy may still be running when the step ends, failed or not (its cleanup removes them).
      settled = await Promise.allSettled(staging);
    }
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (cache) {
      // The disk made by this build, stored now that the raw's digest is known (once hashed, not twice).
      const { provision, seal, packages } = ctx;
      if (!cache.disk && provision && seal && packages) {
        const raw = written.find((a) => a.format === 'raw');
        p.status('storing the disk in the step cache');
        await cache.store.put('disk', cache.keys.disk.key, cache.keys.disk.inputs, { layout: ctx.disk.layout, packages, provision, seal }, [{ name: DISK_FILE, from: ctx.disk.raw, sha256: raw?.sha256 }]);
      }
      for (const a of written) {
        const k = cache.keys.formats.get(a.format);
        if (k) await cache.store.put(`format:${a.format}`, k.key, k.inputs, { size: a.size, sha256: a.sha256 }, [{ name: FORMAT_FILE, from: a.file, sha256: a.sha256 }]);
      }
    }
    const byFormat = new Map<string, Artifact>([...fromCache, ...written.map((a) => [a.format, a] as const)]);
    const artifacts = c.formats.map((f) => byFormat.get(f)).filter((a): a is Artifact => Boolean(a));
    ctx.artifacts = artifacts;
    for (const a of artifacts) p.log(`${a.format.padEnd(6)} ${humanBytes(a.size).padStart(10)}  ${a.sha256.slice(0, 16)}…${fromCache.has(a.format) ? '  (cache)' : ''}`);
    if (staged) p.log(`staged in the release store while written: ${[...staged.blobs.keys()].join(', ')}`);
  },
  async cleanup(ctx) {
    // Copies the release step did not move into place (a failed or interrupted build).
    for (const b of ctx.staged?.blobs.values() ?? []) await ctx.staged?.store.discardStaged(b.path);
  },
});
