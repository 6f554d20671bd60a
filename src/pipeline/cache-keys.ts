/**
 * What each cached step output depends on (src/pipeline/step-cache.ts): the inputs its key is made
 * of. The rule is that the key changes whenever the output could:
 *
 * - tree (the provisioned and sealed tree, before the version stamp): the base tree's key and
 *   digest; kiln.lock; the Ansible controller (its tools tree's key, or the host's ansible-core);
 *   every file of the repository the build sandbox shows the playbook (playbook, roles, vars,
 *   inventory, ansible.cfg, templates, kiln.yaml itself: content, mode and link targets); the
 *   kiln.yaml settings the configure, provision and seal steps read; the base's date (the
 *   playbook's SOURCE_DATE_EPOCH); Kiln's own code (its version and a digest of its files) and the host's bubblewrap. Not the commit's
 *   SOURCE_DATE_EPOCH: files the build writes carry a fixed mark until the disk clamps them to it
 *   (src/disk/tree.ts markBuildTimes), so a tree made at one commit is what a later commit's build
 *   from scratch would make. The version and commit are in the key only when
 *   a repository file names `kiln_image_version` or `kiln_image_commit` (the playbook could write
 *   them into the image); otherwise a new tag on unchanged content reuses the tree.
 * - disk: the tree's key, the version stamp (name, version, commit, snapshot), the disk settings,
 *   and the host's e2fsprogs, grub, mtools, fdisk.
 * - audit (a pass, no files): the disk's key, the seal and audit settings, Kiln's code.
 * - each format: the disk's key, the format, the settings its writer reads, qemu-utils and tar.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { exec } from '../exec.js';
import type { FormatName } from '../formats/registry.js';
import { repositoryFiles, signingKeyFiles } from '../provision/chroot.js';
import { kilnCodeDigest } from '../version.js';
import type { Controller } from '../sandbox/tools.js';
import { sourceDate, type SourceRecord } from '../source/record.js';
import type { LoadedTemplate } from '../template/load.js';
import type { BuildVersion } from '../version/git.js';
import { cacheKey } from './step-cache.js';

/** Host packages whose programs write the image's bytes or check its inputs. */
export const HOST_TOOLS = ['mmdebstrap', 'qemu-utils', 'e2fsprogs', 'fuse2fs', 'mtools', 'fdisk', 'grub-pc-bin', 'grub-efi-amd64-bin', 'gpgv', 'bubblewrap', 'tar', 'xz-utils', 'gzip'];

let hostVersions: Promise<Record<string, string>> | undefined;

/** Debian versions of the host tools (one dpkg-query per process). */
export function hostToolVersions(): Promise<Record<string, string>> {
  hostVersions ??= (async () => {
    const q = await exec('dpkg-query', ['-W', '-f', '${db:Status-Abbrev}\t${Package}\t${Version}\n', ...HOST_TOOLS], { allowFailure: true });
    const out: Record<string, string> = {};
    for (const l of q.stdout.split('\n')) {
      const [status, name, version] = l.split('\t');
      if (status?.startsWith('ii') && name) out[name] = version;
    }
    return out;
  })();
  return hostVersions;
}

export interface RepositoryDigest {
  sha256: string;
  files: number;
  /** Which of Kiln's per-build playbook variables some file names. */
  names: { version: boolean; commit: boolean };
}

/** The digest of what the build sandbox shows the playbook of the repository (src/provision/chroot.ts copyRepository). */
export async function repositoryDigest(repoRoot: string, exclude: string[]): Promise<RepositoryDigest> {
  const skip = new Set(exclude.map((f) => relative(repoRoot, resolve(f))));
  const files = (await repositoryFiles(repoRoot)).filter((f) => !skip.has(f) && !f.split('/').includes('..')).sort();
  const h = createHash('sha256');
  const names = { version: false, commit: false };
  let n = 0;
  for (const f of files) {
    const p = join(repoRoot, f);
    let st;
    try { st = lstatSync(p); } catch { continue; }
    if (st.isSymbolicLink()) {
      h.update(`l\0${f}\0${readlinkSync(p)}\n`);
    } else if (st.isFile()) {
      const data = readFileSync(p);
      const text = data.toString('latin1');
      if (text.includes('kiln_image_version')) names.version = true;
      if (text.includes('kiln_image_commit')) names.commit = true;
      h.update(`f\0${f}\0${(st.mode & 0o111) ? 'x' : '-'}\0${data.length}\0`).update(data).update('\n');
    } else continue;
    n++;
  }
  return { sha256: h.digest('hex'), files: n, names };
}

export interface CacheKeys {
  tree: { key: string; inputs: Record<string, unknown> };
  disk: { key: string; inputs: Record<string, unknown> };
  audit: { key: string; inputs: Record<string, unknown> };
  formats: Map<FormatName, { key: string; inputs: Record<string, unknown> }>;
}

/** What the keys are made from (a build context has all of it once the cache step runs). */
interface KeyContext {
  template: LoadedTemplate;
  version: BuildVersion;
  source: SourceRecord;
  lock?: { sha256: string };
  controller?: Controller;
}

export async function cacheKeys(ctx: KeyContext): Promise<CacheKeys> {
  const c = ctx.template.config;
  const v = ctx.version;
  const host = await hostToolVersions();
  const repo = await repositoryDigest(v.repoRoot, signingKeyFiles(c, ctx.template.dir));
  const ctl = ctx.controller;
  const treeInputs = {
    kiln: kilnCodeDigest(),
    base: { key: ctx.source.baseKey, sha256: ctx.source.baseSha256 ?? null },
    lock: ctx.lock?.sha256 ?? null,
    controller: ctl?.tools ? { tools: ctl.tools.key, ansibleCore: ctl.ansibleCore ?? null } : { host: ctl?.ansibleCore ?? null },
    repository: repo.sha256,
    template: relative(v.repoRoot, ctx.template.file),
    playbook: relative(v.repoRoot, ctx.template.playbook),
    settings: { name: c.name, hostname: c.disk.hostname, provision: c.provision, seal: c.seal, source: c.source },
    // The playbook's SOURCE_DATE_EPOCH is the base's date; the commit's is applied at the disk (src/disk/tree.ts).
    baseDate: sourceDate(ctx.source),
    ...(repo.names.version ? { version: v.version } : {}),
    ...(repo.names.commit ? { commit: v.commit } : {}),
    hostTools: { bubblewrap: host.bubblewrap ?? null },
  };
  const tree = cacheKey('tree', treeInputs);
  const diskInputs = {
    tree,
    stamp: { name: c.name, version: v.version, commit: v.commit, snapshot: v.snapshot, sourceDateEpoch: v.sourceDateEpoch },
    disk: c.disk,
    hostTools: pick(host, ['e2fsprogs', 'fuse2fs', 'grub-pc-bin', 'grub-efi-amd64-bin', 'mtools', 'fdisk']),
  };
  const disk = cacheKey('disk', diskInputs);
  const auditInputs = { kiln: kilnCodeDigest(), disk, seal: { disable: c.seal.disable, keep: c.seal.keep }, audit: c.audit, hostTools: pick(host, ['e2fsprogs', 'fuse2fs']) };
  const formats = new Map<FormatName, { key: string; inputs: Record<string, unknown> }>();
  for (const f of c.formats) {
    const inputs = {
      kiln: kilnCodeDigest(), disk, format: f,
      settings: { name: c.name, version: v.version, sourceDateEpoch: v.sourceDateEpoch, firmware: c.disk.firmware, vm: c.vm, description: c.description ?? null },
      hostTools: pick(host, ['qemu-utils', 'tar', 'gzip']),
    };
    formats.set(f, { key: cacheKey(`format:${f}`, inputs), inputs });
  }
  return {
    tree: { key: tree, inputs: { ...treeInputs, repositoryFiles: repo.files } },
    disk: { key: disk, inputs: diskInputs },
    audit: { key: cacheKey('audit', auditInputs), inputs: auditInputs },
    formats,
  };
}

function pick(o: Record<string, string>, keys: string[]): Record<string, string | null> {
  return Object.fromEntries(keys.map((k) => [k, o[k] ?? null]));
}
