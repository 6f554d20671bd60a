/**
 * Writes the release's artifacts from the one raw GPT disk of a build. Independent conversions run
 * in parallel (at most two at a time, the build host's cores); the streamOptimized VMDK is made
 * once and reused for the OVA; the raw is read once to hash both itself and the fixed VHD; zero
 * regions stay holes. Every byte is a function of the raw, the name, the version and
 * SOURCE_DATE_EPOCH (README, "Formats", lists the fields this has to fix).
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { humanBytes, humanSeconds, silentLogger, type Logger } from '../log.js';
import { FORMATS, formatMediaType, type FormatName } from './registry.js';
import { writeGceTarball } from './gce.js';
import { sha256OfFile } from '../fsio.js';
import { hashFile, runLimited } from './io.js';
import { buildManifest } from './manifest.js';
import { buildOvf, type OvfNic, type OvfScsiController } from './ovf.js';
import { writeOva } from './ova.js';
import { writeQcow2 } from './qcow2.js';
import { populatedBytes } from './qemu.js';
import { placeRaw } from './raw.js';
import { planFixedVhd, writeFixedVhd } from './vhd.js';
import { writeVhdx } from './vhdx.js';
import { writeStreamOptimizedVmdk } from './vmdk.js';
import { artifactFileName } from './names.js';

export { artifactFileName } from './names.js';
export { FORMAT_SPECS, FORMATS, formatMediaType, formatSpec, type FormatName, type FormatSpec } from './registry.js';
export { extractOvaDisk, listOva, readOvaMember } from './ova.js';
export { parseVhdFooter, type VhdFooter } from './vhd-footer.js';
export { validateOvf } from './ovf-validate.js';
export { parseManifest } from './manifest.js';

export interface FormatInput {
  /** The raw GPT disk of the build. */
  raw: string;
  outDir: string;
  name: string;
  version: string;
  sourceDateEpoch: number;
  firmware: ('bios' | 'uefi')[];
  cpus: number;
  memoryMiB: number;
  description?: string;
  qcow2Compress?: boolean;
  /** OVA virtual hardware. Defaults: lsilogic SCSI and an E1000 NIC (what VMware and VirtualBox both emulate). */
  ova?: { controller?: OvfScsiController; nic?: OvfNic };
  /** Conversions run at once; default min(2, CPUs). */
  concurrency?: number;
  logger?: Logger;
  /**
   * Called once per format asked for, as soon as its file is final and while the other formats are
   * still being written, with where the file is then. writeFormats waits for every promise before it
   * moves the files into outDir, and fails when one fails. The formats step stages each artifact into
   * the release store this way, so the release step has nothing left to copy.
   */
  onWritten?: (format: FormatName, file: string) => Promise<void>;
}

/** An artifact file of a build: the build's state, the release step and the store (as its ArtifactInput) all take this one type. */
export interface Artifact {
  format: FormatName;
  /** Absolute path. */
  file: string;
  size: number;
  sha256: string;
  mediaType: string;
}

interface Task { label: string; run: () => Promise<void> }

export async function writeFormats(formats: FormatName[], input: FormatInput): Promise<Artifact[]> {
  const logger = input.logger ?? silentLogger;
  checkInput(formats, input);
  const wanted = new Set(formats);
  const raw = resolve(input.raw);
  const rawSize = (await stat(raw).catch(() => { throw new KilnError(`raw disk not found: ${raw}`); })).size;
  if (rawSize === 0) throw new KilnError(`raw disk ${raw} is empty`);
  const outDir = resolve(input.outDir);
  await mkdir(outDir, { recursive: true });
  // Staged beside the results (same filesystem, so the final renames are atomic); names are final already.
  const staging = await mkdtemp(join(outDir, '.kiln-formats-'));
  const { name, version, sourceDateEpoch: sde } = input;
  const staged = (f: FormatName) => join(staging, artifactFileName(name, version, f));
  const sha = new Map<FormatName, string>();
  const tasks: Task[] = [];
  const pending: Promise<void>[] = [];
  const written = (f: FormatName, file: string) => {
    if (!input.onWritten || !wanted.has(f)) return;
    const p = input.onWritten(f, file);
    p.catch(() => undefined); // observed below; never an unhandled rejection
    pending.push(p);
  };

  if (wanted.has('vmdk') || wanted.has('ova')) {
    tasks.push({ label: wanted.has('ova') ? 'vmdk+ova' : 'vmdk', run: async () => {
      const vmdk = staged('vmdk');
      await writeStreamOptimizedVmdk(raw, vmdk, name, version, logger);
      written('vmdk', vmdk);
      const vmdkSha = await sha256OfFile(vmdk);
      if (wanted.has('vmdk')) sha.set('vmdk', vmdkSha);
      if (wanted.has('ova')) {
        sha.set('ova', await packOva(vmdk, vmdkSha, staged('ova'), input, rawSize, logger));
        written('ova', staged('ova'));
      }
    } });
  }
  if (wanted.has('gce')) tasks.push({ label: 'gce', run: async () => { sha.set('gce', await writeGceTarball(raw, staged('gce'), sde, logger)); written('gce', staged('gce')); } });
  if (wanted.has('qcow2')) {
    tasks.push({ label: 'qcow2', run: async () => {
      await writeQcow2(raw, staged('qcow2'), input.qcow2Compress ?? false, logger);
      written('qcow2', staged('qcow2'));
      sha.set('qcow2', await sha256OfFile(staged('qcow2')));
    } });
  }
  if (wanted.has('raw') || wanted.has('vhd')) {
    // One read of the raw gives its own digest and, continued with the padding and footer, the VHD's.
    tasks.push({ label: 'hash raw', run: async () => {
      const h = await hashFile(raw);
      if (wanted.has('vhd')) {
        const plan = planFixedVhd(rawSize, name, version, sde);
        const v = h.copy();
        const zeros = Buffer.alloc(Math.min(plan.virtualSize - rawSize, 1 << 20));
        for (let left = plan.virtualSize - rawSize; left > 0; left -= zeros.length) v.update(zeros.subarray(0, Math.min(left, zeros.length)));
        sha.set('vhd', v.update(plan.footer).digest('hex'));
      }
      sha.set('raw', h.digest('hex'));
    } });
  }
  if (wanted.has('vhdx')) {
    tasks.push({ label: 'vhdx', run: async () => {
      await writeVhdx(raw, staged('vhdx'), name, version, logger);
      written('vhdx', staged('vhdx'));
      sha.set('vhdx', await sha256OfFile(staged('vhdx')));
    } });
  }
  if (wanted.has('vhd')) tasks.push({ label: 'vhd', run: async () => { await writeFixedVhd(raw, staged('vhd'), name, version, sde, logger); written('vhd', staged('vhd')); } });
  const rawTarget = join(outDir, artifactFileName(name, version, 'raw'));
  const rawInPlace = raw === rawTarget;

  const concurrency = input.concurrency ?? Math.max(1, Math.min(2, availableParallelism()));
  const timed = tasks.map((t) => async () => {
    const t0 = Date.now();
    await t.run();
    logger.debug(`format ${t.label} done in ${humanSeconds(Date.now() - t0)}`);
  });
  try {
    // Placed before anything reads the raw: a hard link changes the raw's ctime, which GNU tar reports
    // as "file changed as we read it" (exit 1) if it happens during the GCE archive.
    if (wanted.has('raw') && !rawInPlace) await placeRaw(raw, staged('raw'), logger);
    written('raw', rawInPlace ? raw : staged('raw'));
    await runLimited(timed, concurrency);
    const failed = (await Promise.allSettled(pending)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const artifacts: Artifact[] = [];
    for (const f of formats) {
      const file = join(outDir, artifactFileName(name, version, f));
      if (!(f === 'raw' && rawInPlace)) await rename(staged(f), file);
      const size = (await stat(file)).size;
      const digest = sha.get(f);
      if (!digest) throw new Error(`no digest computed for ${f}`);
      artifacts.push({ format: f, file, size, sha256: digest, mediaType: formatMediaType(f) });
      logger.info(`  ${f.padEnd(6)} ${humanBytes(size).padStart(10)}  sha256:${digest.slice(0, 16)}…  ${file}`);
    }
    return artifacts;
  } finally {
    // Nothing may still be reading a file removed here.
    await Promise.allSettled(pending);
    await rm(staging, { recursive: true, force: true });
  }
}

async function packOva(vmdk: string, vmdkSha: string, dst: string, input: FormatInput, rawSize: number, logger: Logger): Promise<string> {
  const base = `${input.name}-${input.version}`;
  const vmdkName = artifactFileName(input.name, input.version, 'vmdk');
  const vmdkSize = (await stat(vmdk)).size;
  const ovf = Buffer.from(buildOvf({
    name: input.name, version: input.version, description: input.description,
    diskFile: vmdkName, diskFileSize: vmdkSize, capacity: rawSize,
    populatedSize: await populatedBytes(vmdk, 'vmdk', logger),
    cpus: input.cpus, memoryMiB: input.memoryMiB, firmware: input.firmware,
    controller: input.ova?.controller, nic: input.ova?.nic,
  }), 'utf8');
  const ovfName = `${base}.ovf`;
  const mf = Buffer.from(buildManifest([
    { name: ovfName, sha256: createHash('sha256').update(ovf).digest('hex') },
    { name: vmdkName, sha256: vmdkSha },
  ]), 'utf8');
  const { sha256 } = await writeOva(dst, [
    { name: ovfName, data: ovf, size: ovf.length },
    { name: `${base}.mf`, data: mf, size: mf.length },
    { name: vmdkName, path: vmdk, size: vmdkSize },
  ], input.sourceDateEpoch);
  return sha256;
}

function checkInput(formats: FormatName[], input: FormatInput): void {
  const bad = formats.filter((f) => !(FORMATS as readonly string[]).includes(f));
  if (bad.length) throw new KilnError(`unknown format(s): ${bad.join(', ')}`, { hint: `formats are ${FORMATS.join(', ')}` });
  if (new Set(formats).size !== formats.length) throw new KilnError(`a format is listed twice: ${formats.join(', ')}`);
  if (!Number.isSafeInteger(input.sourceDateEpoch) || input.sourceDateEpoch < 0) throw new KilnError(`SOURCE_DATE_EPOCH must be a non-negative integer, got ${input.sourceDateEpoch}`);
  if (!Number.isSafeInteger(input.cpus) || input.cpus < 1) throw new KilnError(`cpus must be a positive integer, got ${input.cpus}`);
  if (!Number.isSafeInteger(input.memoryMiB) || input.memoryMiB < 1) throw new KilnError(`memoryMiB must be a positive integer, got ${input.memoryMiB}`);
  if (!input.firmware.length) throw new KilnError('firmware must name bios, uefi or both');
  for (const f of formats) artifactFileName(input.name, input.version, f);
}
