// Debian packages of the build host, in two lists. hostTools: what Kiln itself runs, which `kiln doctor`
// checks and installs and `scripts/setup-host.sh` installs. testTools: what only the tests run (a local
// registry, interoperability checks, fixtures), which `scripts/setup-host.sh --tests` adds (npm test's
// pretest); a user of Kiln never needs them.
export const hostTools = [
  // [command, package, why]
  ['mmdebstrap', 'mmdebstrap', 'build the Debian root tree from the signed archive'],
  ['gpgv', 'gpgv', 'verify the archive Release signature'],
  ['ansible-playbook', 'ansible', 'apply the playbook (Debian\'s ansible, with ansible.posix and community.general)'],
  ['qemu-img', 'qemu-utils', 'convert the raw disk into qcow2, VMDK, VHD, VHDX'],
  ['qemu-system-x86_64', 'qemu-system-x86', 'boot images for tests and `kiln boot`'],
  ['mke2fs', 'e2fsprogs', 'build the ext4 root filesystem from a tree'],
  ['debugfs', 'e2fsprogs', 'fix ext4 hash seed and inode times on e2fsprogs < 1.47.1; read every file of an image in one pass for the audit'],
  ['fuse2fs', 'fuse2fs', 'read an image\'s filesystem losslessly for `kiln audit` and `kiln rebuild`, with no loop device and no mount on the host'],
  ['mkfs.vfat', 'dosfstools', 'build the EFI system partition'],
  ['mcopy', 'mtools', 'fill FAT images without mounting'],
  ['sfdisk', 'fdisk', 'write the GPT partition table to a file'],
  ['grub-mkimage', 'grub-common', 'build the GRUB core images'],
  ['/usr/lib/grub/i386-pc/boot.img', 'grub-pc-bin', 'GRUB for BIOS boot'],
  ['/usr/lib/grub/x86_64-efi/linux.mod', 'grub-efi-amd64-bin', 'GRUB for UEFI boot'],
  ['/usr/share/OVMF/OVMF_CODE_4M.fd', 'ovmf', 'UEFI firmware for booting images in QEMU'],
  ['/usr/share/keyrings/debian-archive-keyring.gpg', 'debian-archive-keyring', 'trust anchor for the Debian archive'],
  ['ssh', 'openssh-client', 'talk to booted machines'],
  ['ssh-keygen', 'openssh-client', 'keys for booted machines, release signatures'],
  ['dpkg-deb', 'dpkg', 'read the control fields of locked .debs for the local repository of a locked build'],
  ['curl', 'curl', 'fetch the archive Release file'],
  ['xorriso', 'xorriso', 'build the NoCloud seed for booted machines'],
  ['xz', 'xz-utils', 'decompress package indexes'],
  ['unshare', 'util-linux', 'the build sandbox\'s namespaces (unshare, nsenter, setpriv, mount)'],
  ['slirp4netns', 'slirp4netns', 'outbound network for the build sandbox without touching the host\'s interfaces or firewall'],
  ['python3', 'python3', 'idmapped mounts for the build sandbox (one syscall util-linux 2.38 lacks)'],
  ['ip', 'iproute2', 'the build sandbox\'s loopback interface'],
  ['hostname', 'hostname', 'the build sandbox\'s host name'],
  ['git', 'git', 'read the version from the git tag and the commit a build is made of'],
  ['zstd', 'zstd', 'read a zstd-compressed initramfs (kiln publish checks the EC2 drivers in it)'],
];
export const testTools = [
  // [command, package, why]: only the tests run these.
  ['skopeo', 'skopeo', 'interoperability checks of the OCI release store (layout and registry)'],
  ['docker-registry', 'docker-registry', 'a local OCI registry for the store tests'],
  ['htpasswd', 'apache2-utils', 'bcrypt password files for the test registry with basic auth'],
  ['dpkg-scanpackages', 'dpkg-dev', 'index the local apt repository of the upgrade test'],
  ['/bin/busybox', 'busybox-static', 'a one-binary image tree for the sandbox unit tests'],
  ['gpg', 'gpg', 'sign the test archives of the lock chain tests'],
  ['setcap', 'libcap2-bin', 'file capabilities in the hostile-image tests'],
  ['setfacl', 'acl', 'POSIX ACLs in the vendor-image fixture'],
  ['ps', 'procps', 'check that no process is left behind (sandbox, fuse2fs, end-to-end builds)'],
  ['/usr/bin/aws', 'awscli', 'an independent client of the AWS stand-in (describe-images by the ImageVersion tag)'],
  ['/usr/bin/az', 'azure-cli', 'an independent client of Azurite (az storage blob show of a published VHD)'],
  ['/usr/bin/chromium', 'chromium', 'open the kiln report pages headless (no network, no console errors, screenshots)'],
  ['podman', 'podman', 'build the runner image recipe (runner/Containerfile) and run a pipeline job in it'],
  ['runc', 'runc', 'the container runtime for podman on hosts with cgroup v1 and v2 side by side, which crun refuses'],
  ['rsync', 'rsync', 'gitlab-ci-local copies the checkout for each job of the pipeline test (--shell-isolation)'],
  ['/usr/lib/python3/dist-packages/botocore/data/ec2/2016-11-15/service-2.json', 'python3-botocore', 'AWS\'s EC2 and EBS service models, which the AWS stand-in validates every request against'],
];
export const hostPackages = [...new Set(hostTools.map((t) => t[1]))];
export const testPackages = [...new Set(testTools.map((t) => t[1]))].filter((p) => !hostPackages.includes(p));
