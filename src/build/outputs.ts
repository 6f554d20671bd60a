import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BuildContext } from './context.js';

/** Moves the finished artifacts into place in one rename, so no partial output is ever visible. */
export function publishOutputs(ctx: BuildContext): void {
  const v = ctx.version!;
  const out = ctx.options.outDir ?? join(ctx.kilnDir, 'out', `${ctx.template.config.name}-${v.version}`);
  mkdirSync(join(out, '..'), { recursive: true });
  // A release is immutable in the store; the out dir is only the latest local copy of a build.
  if (existsSync(out)) rmSync(out, { recursive: true, force: true });
  renameSync(ctx.stagingDir, out);
  ctx.artifacts = ctx.artifacts.map((a) => ({ ...a, file: join(out, a.file.slice(ctx.stagingDir.length + 1)) }));
  if (ctx.raw?.startsWith(ctx.stagingDir)) ctx.raw = join(out, ctx.raw.slice(ctx.stagingDir.length + 1));
  ctx.outDir = out;
}

