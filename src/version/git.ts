/**
 * The version is the git tag at HEAD. A release build needs a clean tree and a tag matching the
 * pattern; a snapshot build is marked as such and can never be released.
 */
import { relative } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, output } from '../exec.js';
import type { Logger } from '../log.js';

export interface BuildVersion {
  /** The release version (the tag), or "snapshot-<shortcommit>[-dirty]" for snapshot builds. */
  version: string;
  /** The tag at HEAD, when there is one. */
  tag?: string;
  commit: string;
  /** Commit time: the SOURCE_DATE_EPOCH of everything the build writes. */
  sourceDateEpoch: number;
  snapshot: boolean;
  dirty: boolean;
  /** The repository root and the template path relative to it (recorded in provenance). */
  repoRoot: string;
  templatePath: string;
}

async function git(dir: string, args: string[]): Promise<string> {
  return output('git', ['-C', dir, ...args], { hint: 'is this a git repository with at least one commit?' });
}

export async function resolveVersion(templateDir: string, templateFile: string, opts: { tagPattern: string; snapshot: boolean }): Promise<BuildVersion> {
  const top = await exec('git', ['-C', templateDir, 'rev-parse', '--show-toplevel'], { allowFailure: true });
  if (top.code !== 0) {
    throw new KilnError(`${templateDir} is not in a git repository`, { hint: 'Kiln versions images by git tag: run `git init`, commit, and `git tag release-0.1.0`' });
  }
  const repoRoot = top.stdout.trim();
  const head = await exec('git', ['-C', repoRoot, 'rev-parse', '--verify', 'HEAD^{commit}'], { allowFailure: true });
  if (head.code !== 0) throw new KilnError('the repository has no commits yet', { hint: 'commit kiln.yaml and the playbook, then tag the commit' });
  const commit = head.stdout.trim();
  const sourceDateEpoch = Number(await git(repoRoot, ['log', '-1', '--format=%ct', commit]));
  // Untracked files count as dirty: they could change what the playbook does.
  const status = await git(repoRoot, ['status', '--porcelain', '--untracked-files=normal']);
  const dirty = status.length > 0;
  const tags = (await git(repoRoot, ['tag', '--points-at', commit, '--list', opts.tagPattern])).split('\n').filter(Boolean).sort();
  const templatePath = relative(repoRoot, templateFile);
  if (opts.snapshot) {
    return { version: `snapshot-${commit.slice(0, 12)}${dirty ? '-dirty' : ''}`, tag: tags[0], commit, sourceDateEpoch, snapshot: true, dirty, repoRoot, templatePath };
  }
  if (dirty) {
    throw new KilnError('refusing a release build from a dirty tree', {
      detail: status,
      hint: 'commit or stash the changes (a release must be rebuildable from its tag), or pass --snapshot for a development build',
    });
  }
  if (tags.length === 0) {
    throw new KilnError(`HEAD (${commit.slice(0, 12)}) has no tag matching '${opts.tagPattern}'`, {
      hint: `tag the commit, e.g. \`git tag ${opts.tagPattern.replace('*', '0.1.0')}\`, or pass --snapshot for a development build`,
    });
  }
  if (tags.length > 1) {
    throw new KilnError(`HEAD has several release tags: ${tags.join(', ')}`, { hint: 'a commit is one version: delete the extra tags' });
  }
  return { version: tags[0], tag: tags[0], commit, sourceDateEpoch, snapshot: false, dirty: false, repoRoot, templatePath };
}

/**
 * Checks `commit` out, detached, at dir: a temporary worktree of repo for `kiln apply` and
 * `kiln rebuild`, which run a release from the commit it was built from. removeWorktree undoes it.
 */
export async function addWorktree(repo: string, commit: string, dir: string, logger?: Logger): Promise<void> {
  await exec('git', ['-C', repo, 'worktree', 'add', '--detach', '--force', dir, commit], { logger });
}

/** Removes a worktree addWorktree made (and git's record of it); a missing one is not an error. */
export async function removeWorktree(repo: string, dir: string): Promise<void> {
  await exec('git', ['-C', repo, 'worktree', 'remove', '--force', dir], { allowFailure: true });
}
