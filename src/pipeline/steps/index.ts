/**
 * What `kiln build` does, in order: one file per step, named as the step. Each declares the slice
 * of kiln.yaml it reads and the results it needs and provides (src/pipeline/plan.ts); the build
 * checks the list before running it. Each step's cleanup runs in reverse on failure or Ctrl-C.
 */
import type { BuildStep } from '../context.js';
import { auditStep } from './audit.js';
import { cacheStep } from './cache.js';
import { configureStep } from './configure.js';
import { diskStep } from './disk.js';
import { formatsStep } from './formats.js';
import { lockStep } from './lock.js';
import { outputsStep } from './outputs.js';
import { preflightStep } from './preflight.js';
import { provisionStep } from './provision.js';
import { releaseStep } from './release.js';
import { sealStep } from './seal.js';
import { sourceStep } from './source.js';
import { stampStep } from './stamp.js';
import { toolsStep } from './tools.js';
import { versionStep } from './version.js';
import { workAreaStep } from './work-area.js';

export const buildSteps: readonly BuildStep[] = [
  versionStep, //    git tag at HEAD -> version, commit, SOURCE_DATE_EPOCH
  preflightStep, //  a released version is never rebuilt in place; the signing key works
  workAreaStep, //   .kiln/work/<build>: removed on success and failure
  lockStep, //       kiln.lock: the locked .debs, verified, as the only repository
  sourceStep, //     signed Debian archive -> verified base tree + source record
  toolsStep, //      the Ansible controller: a cached tools tree (or the host's Ansible)
  cacheStep, //      the step cache: keys of the outputs below, and which it holds already
  configureStep, //  the base tree unpacked, with Kiln's layer: DHCP on any NIC, cloud-init
  provisionStep, //  the Ansible playbook over chroot, in the build sandbox, twice (idempotence)
  sealStep, //       scrub identities and leftovers; first-boot units
  stampStep, //      /etc/release, os-release IMAGE_ID/IMAGE_VERSION
  diskStep, //       tree -> raw GPT disk, BIOS + UEFI, without mounts
  auditStep, //      the disk itself is read back: any finding fails the build
  formatsStep, //    raw -> qcow2, VMDK, VHD, VHDX, OVA, GCE
  releaseStep, //    immutable OCI release with SBOM, provenance, signature
  outputsStep, //    artifacts into .kiln/out/<name>-<version> or --out, replacing only Kiln's files
];

export { auditStep, cacheStep, configureStep, diskStep, formatsStep, lockStep, outputsStep, preflightStep, provisionStep, releaseStep, sealStep, sourceStep, stampStep, toolsStep, versionStep, workAreaStep };
