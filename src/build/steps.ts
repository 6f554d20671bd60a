import type { Step } from '../pipeline/runner.js';
import type { BuildContext } from './context.js';
import { auditStep, diskStep, formatsStep, sealStep } from './steps-image.js';
import { fetchSourceStep, imageLayerStep, provisionStep, publishStep, resolveVersionStep, stampStep, toolsStep, workAreaStep } from './steps-prepare.js';
import { releaseCheckStep, releaseStep } from './steps-release.js';
import { lockStep } from './steps-lock.js';

/** What `kiln build` does, in order. Each step's cleanup runs in reverse on failure or Ctrl-C. */
export const buildSteps: Step<BuildContext>[] = [
  resolveVersionStep, // git tag at HEAD -> version, commit, SOURCE_DATE_EPOCH
  releaseCheckStep, //   a released version is never rebuilt in place
  workAreaStep, //       .kiln/work/<build>: removed on success and failure
  lockStep, //           kiln.lock: the locked .debs, verified, as the only repository
  fetchSourceStep, //    signed Debian archive -> verified base tree + source record
  toolsStep, //          the Ansible controller: a cached tools tree (or the host's Ansible)
  imageLayerStep, //     Kiln's layer: DHCP on any NIC, cloud-init for users and keys
  provisionStep, //      the Ansible playbook over chroot, in the build sandbox, twice (idempotence)
  sealStep, //           scrub identities and leftovers; first-boot units
  stampStep, //          /etc/release, os-release IMAGE_ID/IMAGE_VERSION
  diskStep, //           tree -> raw GPT disk, BIOS + UEFI, without mounts
  auditStep, //          the disk itself is read back: any finding fails the build
  formatsStep, //        raw -> qcow2, VMDK, VHD, VHDX, OVA, GCE
  releaseStep, //        immutable OCI release with SBOM, provenance, signature
  publishStep, //        artifacts into .kiln/out/<name>-<version> or --out, replacing only Kiln's files
];
