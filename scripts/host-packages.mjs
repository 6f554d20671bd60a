// Debian packages Kiln runs on the build host. Single source for scripts/setup-host.sh and `kiln doctor`.
export const hostTools = [
  // [command, package, why]
  ['mmdebstrap', 'mmdebstrap', 'build the Debian root tree from the signed archive'],
  ['gpgv', 'gpgv', 'verify the archive Release signature'],
  ['ansible-playbook', 'ansible', 'apply the playbook (Debian\'s ansible, with ansible.posix and community.general)'],
  ['qemu-img', 'qemu-utils', 'convert the raw disk into qcow2, VMDK, VHD, VHDX'],
  ['qemu-system-x86_64', 'qemu-system-x86', 'boot images for tests and `kiln boot`'],
  ['mke2fs', 'e2fsprogs', 'build the ext4 root filesystem from a tree'],
  ['debugfs', 'e2fsprogs', 'read an image\'s filesystem for `kiln audit` without mounting it'],
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
  ['skopeo', 'skopeo', 'interoperability checks of the OCI release store'],
  ['docker-registry', 'docker-registry', 'a local OCI registry for tests'],
  ['dpkg-deb', 'dpkg', 'build test packages'],
  ['curl', 'curl', 'fetch the archive Release file'],
  ['xz', 'xz-utils', 'decompress package indexes'],
  ['unshare', 'util-linux', 'private mount and PID namespaces for provisioning'],
];
export const hostPackages = [...new Set(hostTools.map((t) => t[1]))];
