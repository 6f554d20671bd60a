/**
 * `kiln rebuild name@version`: build a release again from its recorded commit (and the kiln.lock
 * committed there), in a temporary git worktree, without releasing; then compare every artifact's
 * sha256 with the release's. When the raw disks differ, both root trees are extracted and the
 * differing files listed.
 */
import { signedByLine } from '../store/policy.js';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { build, kilnDirFor, type BuildRecord } from '../pipeline/build.js';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { Logger } from '../log.js';
import { syntaxCheck } from '../provision/ansible.js';
import type { ReleaseStore } from '../store/index.js';
import { checkCommit, checkTemplatePath } from '../store/record.js';
import { loadTemplate } from '../template/load.js';
import { diffRootTrees, firstDifferingBytes, type TreeDifference } from './treediff.js';
import { addWorktree, removeWorktree } from '../version/git.js';

export interface ArtifactComparison { format: string; released: string; rebuilt?: string; same: boolean }

export interface RebuildReport {
  release: string;
  commit: string;
  identical: boolean;
  artifacts: ArtifactComparison[];
  /** The first differing files of the raw disk's root tree (when the raw differs). */
  files?: TreeDifference[];
  /** Bytes of the raw that differ, when the trees are the same (filesystem metadata). */
  rawBytes?: { count: number; offsets: number[] };
  lockSha256?: { released?: string; rebuilt?: string };
  durationMs: number;
  outDir?: string;
}

export interface RebuildOptions {
  ref: string;
  /** Any directory in the image's git repository. */
  repoDir: string;
  store: ReleaseStore;
  logger: Logger;
  /** Keep the rebuilt artifacts (in .kiln/rebuild/...) instead of removing them. */
  keep?: boolean;
  /** How many differing files to list. */
  limit?: number;
  onStatus?: (s: string) => void;
}

export async function rebuildRelease(o: RebuildOptions): Promise<RebuildReport> {
  const t0 = Date.now();
  const resolved = await o.store.resolve(o.ref, { force: true });
  const entry = await o.store.entry(`${resolved.name}@${resolved.version}`);
  o.logger.info(`${resolved.name}@${resolved.version} ${resolved.digest}: ${signedByLine(resolved.signers, o.store.trust)}`);
  const rec = entry.record;
  if (!rec.template) throw new KilnError(`release ${rec.name}@${rec.version} does not record its kiln.yaml path`);
  // The record is handed to git and the file system: the same checks kiln apply makes.
  checkCommit(rec.git?.commit, `${rec.name}@${rec.version}`);
  checkTemplatePath(rec.template, `${rec.name}@${rec.version}`);
  const repo = (await exec('git', ['-C', o.repoDir, 'rev-parse', '--show-toplevel'], { allowFailure: true })).stdout.trim();
  if (!repo) throw new KilnError(`${o.repoDir} is not in a git repository`, { hint: 'run kiln rebuild inside the image repository' });
  const has = await exec('git', ['-C', repo, 'cat-file', '-e', `${rec.git.commit}^{commit}`], { allowFailure: true });
  if (has.code !== 0) throw new KilnError(`commit ${rec.git.commit.slice(0, 12)} of ${rec.name}@${rec.version} is not in the repository at ${repo}`, { hint: 'git fetch --tags, then run kiln rebuild again' });
  const work = join(kilnDirFor(repo), 'rebuild', `${rec.name}-${rec.version}-${process.pid}`);
  const tree = join(work, 'src');
  const outDir = join(work, 'out');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  let record: BuildRecord | undefined;
  try {
    await addWorktree(repo, rec.git.commit, tree, o.logger);
    const template = loadTemplate(join(tree, rec.template));
    await syntaxCheck(template);
    // The same cache a build in the repository uses: a rebuild reuses the base tree and the .debs.
    const cacheDir = process.env.KILN_CACHE_DIR ?? join(repo, dirname(rec.template), '.kiln', 'cache');
    // No step cache: a rebuild proves the release can be made again from its inputs, not from Kiln's earlier outputs.
    record = await build(template, { snapshot: false, onError: 'cleanup', noRelease: true, outDir, cacheDir, noCache: true }, o.logger);
    if (record.version !== rec.version) throw new KilnError(`the commit now builds version ${record.version}, not ${rec.version}`, { hint: 'the release tag moved or was deleted' });
    const artifacts: ArtifactComparison[] = resolved.artifacts.map((a) => {
      const r = record!.artifacts.find((x) => x.format === a.format);
      return { format: a.format, released: a.sha256, rebuilt: r?.sha256, same: r?.sha256 === a.sha256 };
    });
    const report: RebuildReport = {
      release: `${rec.name}@${rec.version}`, commit: rec.git.commit, identical: artifacts.every((a) => a.same), artifacts,
      lockSha256: { released: (rec.source as { lockSha256?: string }).lockSha256, rebuilt: record.source?.lockSha256 },
      durationMs: 0, outDir: o.keep ? outDir : undefined,
    };
    const raw = resolved.artifacts.find((a) => a.format === 'raw');
    const rawRebuilt = record.artifacts.find((a) => a.format === 'raw');
    if (raw && rawRebuilt && raw.sha256 !== rawRebuilt.sha256) {
      if (!existsSync(raw.location)) {
        o.logger.warn(`the released raw disk is not a local file (${raw.location}): pull the release to list the differing files`);
      } else {
        o.onStatus?.('reading both root trees to list the differing files');
        report.files = await diffRootTrees(raw.location, rawRebuilt.file, join(work, 'trees'), { limit: o.limit ?? 20, logger: o.logger });
        if (!report.files.length) report.rawBytes = await firstDifferingBytes(raw.location, rawRebuilt.file);
      }
    }
    report.durationMs = Date.now() - t0;
    return report;
  } finally {
    await removeWorktree(repo, tree);
    if (o.keep) for (const d of ['src', 'trees']) rmSync(join(work, d), { recursive: true, force: true });
    else rmSync(work, { recursive: true, force: true });
  }
}
