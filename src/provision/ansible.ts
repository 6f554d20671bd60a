/**
 * Ansible is the configuration engine; Kiln drives Debian's ansible-playbook and reads its
 * machine-readable results (ansible.posix.jsonl), deciding the outcome from the stats, not the
 * exit code alone (a YAML error exits 4 like an unreachable host does).
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { exec } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';
import { Sandbox } from '../sandbox/index.js';
import { controllerLayout } from '../sandbox/layout.js';
import { controllerFor } from '../sandbox/tools.js';
import type { LoadedTemplate } from '../template/load.js';
import { copyRepository, REPO, repositoryFiles, sandboxedSyntaxCheck, signingKeyFiles } from './chroot.js';

/**
 * `kiln validate`'s syntax check: the build's own Ansible (provision.ansible) in a sandbox that
 * holds a copy of the repository and nothing else (no network, no image).
 */
export async function syntaxCheck(t: LoadedTemplate, logger: Logger = silentLogger): Promise<void> {
  const kilnDir = join(t.dir, '.kiln');
  const work = join(kilnDir, 'work', `validate-${process.pid}`);
  mkdirSync(work, { recursive: true });
  let box: Sandbox | undefined;
  try {
    const cacheDir = process.env.KILN_CACHE_DIR ?? join(kilnDir, 'cache');
    const controller = await controllerFor(t.config, cacheDir, work, logger);
    const top = await exec('git', ['-C', t.dir, 'rev-parse', '--show-toplevel'], { allowFailure: true });
    const root = top.code === 0 ? top.stdout.trim() : t.dir;
    const files = top.code === 0 ? await repositoryFiles(root) : readdirSync(t.dir, { recursive: true, encoding: 'utf8' }).filter((f) => !f.startsWith('.kiln'));
    const copy = join(work, 'repo');
    copyRepository(root, files, copy, signingKeyFiles(t.config, t.dir));
    box = await Sandbox.start({ dir: join(work, 'sandbox'), layout: [...controllerLayout(controller.root), { kind: 'bind', mode: 'ro', src: copy, dst: REPO }], network: 'none', hostname: 'kiln-validate', logger });
    const inside = (p: string) => `${REPO}/${relative(root, p)}`.replace(/\/$/, '');
    const outside = (p: string) => (p.startsWith(`${REPO}/`) ? join(root, p.slice(REPO.length)) : p);
    await sandboxedSyntaxCheck(box, inside(t.playbook), inside(t.dir), outside);
  } finally {
    await box?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

