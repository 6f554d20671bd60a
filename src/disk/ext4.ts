/**
 * The ext4 root filesystem, built from the tree with `mke2fs -d` into a partition-sized file.
 *
 * Determinism (README, "The disk"): a pinned mke2fs.conf and feature list, fixed -U and hash
 * seed, E2FSPROGS_FAKE_TIME for the superblock and crtimes, and inode atime/ctime fixed to
 * SOURCE_DATE_EPOCH. e2fsprogs >= 1.47.1 does the last two natively (SOURCE_DATE_EPOCH and
 * -E hash_seed=). 1.47.0 (Debian 12) cannot: there we drop the backup superblocks (which debugfs
 * cannot rewrite) and fix hash seed and times with one debugfs pass.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError } from '../errors.js';
import { exec, type ExecOptions } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';
import { INODE_RATIO, INODE_SIZE } from './tree.js';

export const EXT4_FEATURES = ['has_journal', 'ext_attr', 'resize_inode', 'dir_index', 'filetype', 'extent', '64bit', 'flex_bg', 'sparse_super', 'large_file', 'huge_file', 'dir_nlink', 'extra_isize', 'metadata_csum'];

/** Replaces the host's /etc/mke2fs.conf so its defaults cannot leak into the image. */
export const MKE2FS_CONF = `[defaults]
	base_features = ${EXT4_FEATURES.join(',')}
	blocksize = 4096
	inode_size = ${INODE_SIZE}
	inode_ratio = ${INODE_RATIO}
	enable_periodic_fsck = 0
	default_mntopts = acl,user_xattr

[fs_types]
	ext4 = {
		features = ${EXT4_FEATURES.join(',')}
	}
	kiln = {
	}
`;

export interface Ext4Spec {
  tree: string;
  image: string;
  uuid: string;
  hashSeed: string;
  sourceDateEpoch: number;
  label?: string;
}

export type E2fsVersion = [number, number, number];

/** "mke2fs 1.47.0 (5-Feb-2023)" -> [1, 47, 0]. */
export function parseE2fsVersion(text: string): E2fsVersion {
  const m = /mke2fs (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) throw new KilnError(`expected the e2fsprogs version ("mke2fs X.Y.Z") from mke2fs -V, got: ${text.trim().split('\n')[0]}`, { where: { command: 'mke2fs -V' }, hint: 'Kiln reads the output of Debian\'s e2fsprogs; run `kiln doctor` and check `mke2fs -V`' });
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

/** 1.47.1 added SOURCE_DATE_EPOCH support (atime/ctime/crtime clamped) and -E hash_seed=. */
export function hasNativeReproducibility(v: E2fsVersion): boolean {
  return v[0] > 1 || (v[0] === 1 && (v[1] > 47 || (v[1] === 47 && v[2] >= 1)));
}

export function mke2fsArgs(spec: Ext4Spec, native: boolean): string[] {
  const features = ['none', ...EXT4_FEATURES, ...(native ? [] : ['sparse_super2'])];
  const ext = ['root_owner=0:0', 'lazy_itable_init=0', 'lazy_journal_init=0', 'nodiscard',
    ...(native ? [`hash_seed=${spec.hashSeed}`] : ['num_backup_sb=0'])];
  // -T names a usage type of our own config, so no size-based type (small, big, huge) applies.
  return ['-q', '-F', '-t', 'ext4', '-T', 'kiln', '-b', '4096', '-I', String(INODE_SIZE), '-i', String(INODE_RATIO),
    '-L', spec.label ?? 'root', '-U', spec.uuid, '-O', features.join(','), '-E', ext.join(','),
    '-d', spec.tree, spec.image];
}

/**
 * Used inode numbers from `dumpe2fs` output (its per-group "Free inodes:" ranges), ignoring the
 * reserved inodes 1-10 except the root directory <2>.
 */
export function usedInodes(dumpe2fs: string): number[] {
  const count = /^Inode count:\s+(\d+)/m.exec(dumpe2fs);
  if (!count) throw new KilnError('expected an "Inode count:" line in the output of dumpe2fs', { where: { command: 'dumpe2fs' }, hint: 'Kiln reads the output of Debian\'s e2fsprogs; run `kiln doctor` and check `mke2fs -V`' });
  const total = Number(count[1]);
  const free = new Uint8Array(total + 1);
  let groups = 0;
  for (const m of dumpe2fs.matchAll(/^\s+Free inodes: ?(.*)$/gm)) {
    groups++;
    for (const part of m[1]!.split(',').map((s) => s.trim()).filter(Boolean)) {
      const [a, b] = part.split('-').map(Number);
      if (!Number.isInteger(a) || (b !== undefined && !Number.isInteger(b))) throw new KilnError(`expected a free inode range N or N-M in the output of dumpe2fs, got "${part}"`, { where: { command: 'dumpe2fs' }, hint: 'Kiln reads the output of Debian\'s e2fsprogs; run `kiln doctor` and check `mke2fs -V`' });
      for (let i = a!; i <= (b ?? a!); i++) if (i <= total) free[i] = 1;
    }
  }
  if (groups === 0) throw new KilnError('expected a "Free inodes:" line per group in the output of dumpe2fs, found none', { where: { command: 'dumpe2fs' }, hint: 'Kiln reads the output of Debian\'s e2fsprogs; run `kiln doctor` and check `mke2fs -V`' });
  const used = [2];
  for (let i = 11; i <= total; i++) if (!free[i]) used.push(i);
  return used;
}

/** One debugfs -w script: the hash seed, then atime and ctime of every used inode set to SDE. */
export function debugfsFixScript(hashSeed: string, inodes: number[], sde: number): string {
  const lines = [`ssv hash_seed ${hashSeed}`];
  for (const ino of inodes) lines.push(`sif <${ino}> atime @${sde}`, `sif <${ino}> ctime @${sde}`);
  return lines.join('\n') + '\n';
}

export interface Ext4Result { native: boolean; fixedInodes: number }

export async function buildExt4(spec: Ext4Spec, workDir: string, logger: Logger = silentLogger): Promise<Ext4Result> {
  const conf = join(workDir, 'mke2fs.conf');
  await writeFile(conf, MKE2FS_CONF);
  const env = {
    MKE2FS_CONFIG: conf,
    E2FSPROGS_FAKE_TIME: String(spec.sourceDateEpoch),
    SOURCE_DATE_EPOCH: String(spec.sourceDateEpoch),
    TZ: 'UTC',
    LC_ALL: 'C',
  };
  const opts: ExecOptions = { env, logger };
  const v = await exec('mke2fs', ['-V'], opts);
  const native = hasNativeReproducibility(parseE2fsVersion(v.stderr + v.stdout));
  await exec('mke2fs', mke2fsArgs(spec, native), { ...opts, hint: 'the root tree must be readable, and the root partition large enough (disk.size)' });
  if (native) return { native, fixedInodes: 0 };

  const dump = await exec('dumpe2fs', [spec.image], { ...opts, maxCapture: 64 * 1024 * 1024 });
  const inodes = usedInodes(dump.stdout);
  const script = join(workDir, 'ext4-fix.debugfs');
  await writeFile(script, debugfsFixScript(spec.hashSeed, inodes, spec.sourceDateEpoch));
  const r = await exec('debugfs', ['-w', '-f', script, spec.image], { ...opts, maxCapture: 1024 * 1024 });
  // debugfs exits 0 even when a request fails; its complaints come on stderr after the banner.
  const complaints = r.stderr.split('\n').filter((l) => l.trim() && !/^debugfs \d/.test(l));
  if (complaints.length > 0) {
    throw new KilnError('debugfs could not fix the ext4 timestamps and hash seed', {
      where: { command: `debugfs -w -f ${script} ${spec.image}` }, detail: complaints.slice(0, 20).join('\n'),
    });
  }
  return { native, fixedInodes: inodes.length };
}
