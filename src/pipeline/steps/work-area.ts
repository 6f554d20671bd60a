/** work-area: the build's scratch directory, removed on success and failure; the out directory checked first. */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { processAlive } from '../../store/lock.js';
import { step } from '../context.js';
import { checkOutDir } from '../outputs.js';

export const workAreaStep = step({
  name: 'work-area',
  describe: 'create the scratch directory for this build; check the out directory can take the artifacts',
  reads: ['name', 'formats'],
  needs: ['version'],
  async run(ctx) {
    // Before any work: found at the end, a taken name would leave a release without its outputs.
    await checkOutDir(ctx);
    removeStaleWorkAreas(join(ctx.workDir, '..'));
    mkdirSync(ctx.stagingDir, { recursive: true });
    mkdirSync(ctx.root, { recursive: true });
  },
  async cleanup(ctx) {
    rmSync(ctx.workDir, { recursive: true, force: true });
  },
});

/**
 * Work areas of builds whose process is gone (kill -9, a crash, a reboot): their sandboxes died
 * with them, only files remain. Named <time>-<pid>; a live pid's area is left alone.
 */
export function removeStaleWorkAreas(dir: string): void {
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const pid = Number(/-(\d+)$/.exec(name)?.[1]);
    if (!pid || pid === process.pid || processAlive(pid)) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
  }
}
