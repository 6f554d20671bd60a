/**
 * The host-tool operations of the build steps that run them (lock, source, tools, provision, disk),
 * as one interface with the real functions as its default: Packer's `Driver` and its mock
 * (`driver.go`, `driver_mock.go`). A unit test hands the steps a fake and checks what each step
 * passes to its tools and what it makes of their results, with no mmdebstrap, Ansible, gpgv,
 * dpkg-query or disk tools (test/unit/pipeline-drivers.test.ts).
 *
 * Only what those steps call, each typed as the real function, so a change to a real signature is a
 * change here and in every fake. Pure code and plain file reads stay direct imports in the steps.
 * This module imports nothing of src/pipeline: context.ts imports it, and the dependency goes one way.
 */
import { assembleDisk } from '../disk/index.js';
import { verifyLockedSet } from '../lock/chain.js';
import { fetchLockedDebs } from '../lock/fetch.js';
import { lockedPackagesIndex, serveLockedRepo } from '../lock/repo.js';
import { ProvisionSandbox, repositoryFiles, type ProvisionSandboxOptions } from '../provision/chroot.js';
import { controllerFor, hostController } from '../sandbox/tools.js';
import { basePackagesOfTar, baseTarball, extractTree, installedPackages, verifyArchive } from '../source/debian.js';
import { fetchVerifiedImage, imageBaseTarball } from '../source/image.js';
import { resolveParent } from '../source/release.js';

/**
 * What the provision step does with its build sandbox. ProvisionSandbox has a private constructor
 * and private state, so no fake could be one; the step needs only these four methods.
 */
export type ProvisionBox = Pick<ProvisionSandbox, 'syntaxCheck' | 'runInImage' | 'provision' | 'stop'>;

export interface Drivers {
  // lock: the chain check of kiln.lock's signed InRelease, the locked .debs and their local repository.
  verifyLockedSet: typeof verifyLockedSet;
  fetchLockedDebs: typeof fetchLockedDebs;
  lockedPackagesIndex: typeof lockedPackagesIndex;
  serveLockedRepo: typeof serveLockedRepo;
  // source: curl + gpgv of the InRelease, mmdebstrap, tar + dpkg-query on the base tarball.
  verifyArchive: typeof verifyArchive;
  baseTarball: typeof baseTarball;
  basePackagesOfTar: typeof basePackagesOfTar;
  // source.image: the download and its checks (pins, signed checksum file), then qemu-img + fuse2fs + tar.
  fetchVerifiedImage: typeof fetchVerifiedImage;
  imageBaseTarball: typeof imageBaseTarball;
  // source.release: the store's resolve (trust policy, revocation, ancestry) and a verified copy of the parent's disk.
  resolveParent: typeof resolveParent;
  // tools (and the lock's tools tree): mmdebstrap for a tools tree, dpkg-query for the host's Ansible.
  controllerFor: typeof controllerFor;
  hostController: typeof hostController;
  // provision: git ls-files, the bubblewrap sandbox, dpkg-query on the tree, tar for a cached tree.
  repositoryFiles: typeof repositoryFiles;
  openProvisionSandbox(o: ProvisionSandboxOptions): Promise<ProvisionBox>;
  installedPackages: typeof installedPackages;
  extractTree: typeof extractTree;
  // disk: sfdisk, mke2fs and debugfs, mkfs.vfat and mtools, grub-mkimage.
  assembleDisk: typeof assembleDisk;
}

/** The real tools: what every build runs (newContext's default). Frozen, so no test can change it for the others. */
export const realDrivers: Drivers = Object.freeze({
  verifyLockedSet, fetchLockedDebs, lockedPackagesIndex, serveLockedRepo,
  verifyArchive, baseTarball, basePackagesOfTar, fetchVerifiedImage, imageBaseTarball, resolveParent,
  controllerFor, hostController,
  repositoryFiles, openProvisionSandbox: (o: ProvisionSandboxOptions) => ProvisionSandbox.open(o), installedPackages, extractTree,
  assembleDisk,
});
