/** Text files the disk carries: GRUB's embedded early config, /boot/grub/grub.cfg and /etc/fstab. */

/** Modules built into the GRUB images: no module directory exists on the disk, so nothing is insmod'ed. */
const COMMON_MODULES = ['part_gpt', 'ext2', 'search', 'search_fs_uuid', 'configfile', 'normal', 'linux', 'echo', 'serial', 'terminal', 'test', 'gzio'];
export const GRUB_MODULES = {
  'i386-pc': ['biosdisk', ...COMMON_MODULES],
  'x86_64-efi': [...COMMON_MODULES, 'efi_gop'],
} as const;

/** Embedded in both GRUB images: find the root filesystem by UUID and hand over to its grub.cfg. */
export function earlyConfig(rootFsUuid: string): string {
  return [
    `search --no-floppy --fs-uuid --set=root ${rootFsUuid}`,
    'set prefix=($root)/boot/grub',
    'configfile $prefix/grub.cfg',
    '',
  ].join('\n');
}

/**
 * /boot/grub/grub.cfg, shared by BIOS and UEFI. It boots the Debian /vmlinuz and /initrd.img
 * symlinks, so kernel upgrades inside the machine keep working without a grub package.
 */
export function grubConfig(rootFsUuid: string, extraCmdline = ''): string {
  const cmdline = ['root=UUID=' + rootFsUuid, 'ro', 'console=tty0', 'console=ttyS0,115200n8', extraCmdline.trim()]
    .filter((s) => s.length > 0).join(' ');
  return [
    '# Written by kiln. GRUB reaches this file through the config embedded in its core image.',
    'serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1',
    'terminal_input serial console',
    'terminal_output serial console',
    'set timeout=1',
    'set default=0',
    '',
    "menuentry 'Debian GNU/Linux' {",
    `\tlinux /vmlinuz ${cmdline}`,
    '\tinitrd /initrd.img',
    '}',
    '',
  ].join('\n');
}

/**
 * /etc/fstab: the root by filesystem UUID, then every entry the tree already had for another mount
 * point (a playbook's /tmp or /var/tmp with hardening options, a swap file, ...), in its order.
 */
export function fstab(rootFsUuid: string, existing = '', rootLabel?: string): string {
  // A root line that already names this filesystem by UUID or label (a vendor's, with its own
  // options such as x-systemd.growfs) is kept as it is; any other root line is replaced.
  const ownRoot = existing.split('\n').find((l) => {
    const f = l.trim().split(/\s+/);
    return !l.trim().startsWith('#') && f[1] === '/' && (f[0].toLowerCase() === `uuid=${rootFsUuid.toLowerCase()}` || (Boolean(rootLabel) && f[0] === `LABEL=${rootLabel}`));
  });
  const kept = existing.split('\n').filter((l) => {
    const t = l.trim();
    if (!t) return false;
    if (t.startsWith('#')) return !/^# (\/etc\/fstab: written by kiln|<file system>|UNCONFIGURED FSTAB)/.test(t);
    return t.split(/\s+/)[1] !== '/';
  });
  return [
    '# /etc/fstab: written by kiln',
    '# <file system> <mount point> <type> <options> <dump> <pass>',
    ownRoot?.trim() ?? `UUID=${rootFsUuid} / ext4 errors=remount-ro 0 1`,
    ...kept,
    '',
  ].join('\n');
}
