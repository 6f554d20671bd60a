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

/** A format's file in its cache entry. */
export const FORMAT_FILE = 'artifact';

export const formatsStep = step({
  name: 'formats',
  describe: 'write every format asked for from the one raw disk',
  reads: ['name', 'formats', 'disk', 'vm', 'description'],
  needs: ['version', 'disk'],
  uses: ['cache', 'provision', 'seal', 'packages'],
  provides: ['artifacts'],
  async run(ctx, p) {
    const c = ctx.template.config;
    const v = ctx.version;
    const cache = ctx.cache;
    const fromCache = new Map<string, Artifact>();
    if (cache?.formats.size) {
      await mkdir(ctx.stagingDir, { recursive: true });
      for (const [f, hit] of cache.formats) {
        const file = join(ctx.stagingDir, artifactFileName(c.name, v.version, f));
        await placeFromCache(hit.file(FORMAT_FILE), file);
        const size = (await stat(file)).size;
        if (size !== hit.data.size) throw new Error(`cached ${f} is ${size} bytes, its entry says ${hit.data.size}`);
        fromCache.set(f, { format: f, file, size, sha256: hit.data.sha256, mediaType: formatMediaType(f) });
      }
      p.log(`from cache: ${[...fromCache.keys()].join(', ')}`);
    }
    const missing = c.formats.filter((f) => !fromCache.has(f));
    const written = missing.length ? await writeFormats(missing, {
      raw: ctx.disk.raw, outDir: ctx.stagingDir, name: c.name, version: v.version, sourceDateEpoch: v.sourceDateEpoch,
      firmware: c.disk.firmware, cpus: c.vm.cpus, memoryMiB: c.vm.memory_mib, description: c.description, logger: ctx.logger,
    }) : [];
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
  },
});
