/**
 * The two shell scripts that assemble the build sandbox, and the helper that makes idmapped mounts.
 * They run host tools only (util-linux's mount, unshare, nsenter, setpriv; iproute2; python3 for
 * one syscall util-linux 2.38 lacks). Node writes the layout (a spec, one mount per line); the
 * scripts only carry it out, so what the sandbox holds is decided and tested in TypeScript
 * (src/sandbox/layout.ts).
 */

/**
 * Phase A runs as the host's root inside a mount namespace of its own (`unshare --mount
 * --propagation private`): nothing it mounts is visible on the host, and the kernel drops it all
 * when the sandbox's last process exits. It builds the sandbox's root filesystem on a tmpfs, then
 * enters the sandbox's user namespace and creates every other namespace from there. The mount
 * namespace the sandbox gets is a copy of this one made by a less privileged user namespace, so the
 * kernel locks every mount made here: the sandbox's root can mount over them, never make a
 * read-only one writable, and never unmount one to see what is underneath.
 *
 * Arguments: holder-pid base-uid spec-file staging-dir. Environment: KILN_PHASE_B (the script the
 * sandbox's pid 1 runs), KILN_IDMAP (the idmap helper's source).
 *
 * Spec lines (tab-separated; destinations are sandbox paths, created in the staging root):
 *   root   -   <dir>   -        the controller's root: <dir>/usr and <dir>/etc read-only (not idmapped)
 *   bind   ro|rw <src> <dst>    an idmapped bind: files owned by uid N on disk are uid N inside
 *   tmpfs  <mode> -    <dst>   a tmpfs owned by the sandbox's root
 *   dev    -   -       <dst>    a minimal /dev: null zero full random urandom tty, pts, ptmx, shm, fd
 *   copy   -   <src>   <dst>    a copy of a host directory, owned by the sandbox's root
 *   file   <mode> <src> <dst>   a copy of a host file, owned by the sandbox's root
 *   mkdir  <mode> -    <dst>    a directory (owned by the sandbox's root)
 */
export const PHASE_A = String.raw`set -eu
holder=$1 base=$2 spec=$3 R=$4
userns=/proc/$holder/ns/user
binds=''
# Consecutive binds are made by one python3 run (it starts in ~50 ms); any other line flushes them first.
flush() { if [ -n "$binds" ]; then printf '%s' "$binds" | python3 -c "$KILN_IDMAP" "$userns"; binds=''; fi; }
mountpoint_for() { # $1 = source; creates $2 as a file or a directory to mount it on
  if [ -d "$1" ]; then mkdir -p "$2"; else mkdir -p "$(dirname "$2")"; [ -e "$2" ] || : > "$2"; fi
}
mount -t tmpfs -o mode=0755,size=16m kiln-sandbox "$R"
mkdir -p "$R/.oldroot" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/var/tmp" "$R/root"
while IFS='	' read -r kind opt src dst; do
  [ "$kind" = bind ] || flush
  case $kind in
    root)
      for d in usr etc; do mkdir -p "$R/$d"; mount --rbind "$src/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; done
      for l in bin sbin lib lib32 lib64 libx32; do if [ -L "$src/$l" ]; then ln -s "$(readlink "$src/$l")" "$R/$l"; fi; done ;;
    bind)
      mountpoint_for "$src" "$R$dst"; binds="$binds$opt	$src	$R$dst
" ;;
    tmpfs)
      mkdir -p "$R$dst"; mount -t tmpfs -o "mode=$opt,uid=$base,gid=$base,nosuid,nodev,size=50%" kiln-tmpfs "$R$dst" ;;
    dev)
      mkdir -p "$R$dst"; mount -t tmpfs -o "mode=0755,uid=$base,gid=$base,nosuid,size=1m" kiln-dev "$R$dst"
      for n in null zero full random urandom tty; do : > "$R$dst/$n"; mount --bind "/dev/$n" "$R$dst/$n"; done
      mkdir "$R$dst/pts" "$R$dst/shm"; ln -s pts/ptmx "$R$dst/ptmx"; ln -s /proc/self/fd "$R$dst/fd"
      ln -s /proc/self/fd/0 "$R$dst/stdin"; ln -s /proc/self/fd/1 "$R$dst/stdout"; ln -s /proc/self/fd/2 "$R$dst/stderr"
      chown -h "$base:$base" "$R$dst/pts" "$R$dst/shm" "$R$dst/ptmx" "$R$dst/fd" "$R$dst/stdin" "$R$dst/stdout" "$R$dst/stderr" ;;
    copy)
      mkdir -p "$R$dst"; cp -r "$src/." "$R$dst/" 2>/dev/null || true; chown -R "$base:$base" "$R$dst" ;;
    file)
      mkdir -p "$(dirname "$R$dst")"; cp "$src" "$R$dst"; chmod "$opt" "$R$dst"; chown "$base:$base" "$R$dst" ;;
    mkdir)
      mkdir -p "$R$dst"; chmod "$opt" "$R$dst"; chown "$base:$base" "$R$dst" ;;
    *) echo "kiln sandbox: unknown spec line: $kind" >&2; exit 2 ;;
  esac
done < "$spec"
flush
# pid 1's script, readable by the sandbox's root (and a short command line in ps)
printf '%s\n' "$KILN_PHASE_B" > "$R/.kiln-init"
# The sandbox's root moves to a fresh tmpfs over /tmp (in this namespace only), so its path can be
# walked by the sandbox's root, which is not the host's root and may not search the work area's parents.
exec 5<"$R"
mount -t tmpfs -o mode=0755,size=1m kiln-sandbox-top /tmp
mkdir /tmp/root
mount --move /proc/self/fd/5 /tmp/root
exec 5<&-
exec nsenter --target "$holder" --user -- setpriv --pdeathsig KILL -- unshare --mount --propagation private --pid --net --uts --ipc --cgroup --fork --kill-child -- sh /tmp/root/.kiln-init
`;

/**
 * Phase B is pid 1 of the sandbox: root of its user namespace, in its own mount, PID, network, UTS,
 * IPC and cgroup namespaces. It mounts what belongs to those namespaces (proc, sysfs, devpts), puts
 * the image's private /proc/sys and module table in place, pivots into the new root, and waits.
 * Commands then enter it with nsenter. It prints "ready <its pid on the host>".
 */
export const PHASE_B = String.raw`set -eu
hostpid=
while read -r k v rest; do if [ "$k" = NSpid: ]; then hostpid=$v; fi; done < /proc/self/status
mount --rbind /tmp/root /tmp/root
cd /tmp/root
for r in . image; do
  [ "$r" = . ] || [ -d image/proc ] || continue
  mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
done
if [ -d image/run/kiln/sysctl ]; then
  # The image's /proc/sys is a writable copy of the host's settings: sysctl tasks change it, not the kernel.
  # Its host and domain names start as the sandbox's own (not the build host's).
  mount --bind image/run/kiln/sysctl image/proc/sys
  printf '%s\n' "$KILN_HOSTNAME" > image/proc/sys/kernel/hostname
  printf '(none)\n' > image/proc/sys/kernel/domainname
fi
if [ -e image/proc/modules ] && [ -f image/run/kiln/state/modules ]; then
  mount --bind image/run/kiln/state/modules image/proc/modules
fi
# The host's hostname and ip (the new root may not have them) act on the sandbox's own namespaces.
hostname "$KILN_HOSTNAME"
ip link set lo up
pivot_root . .oldroot
cd /
umount -l /.oldroot
echo "ready $hostpid"
while :; do sleep 3600; done
`;

/**
 * Idmapped bind mounts (open_tree + mount_setattr + move_mount): files owned by uid N on disk
 * are owned by uid N inside the user namespace, whose root is an unprivileged uid on the host. So
 * the image tree keeps its real owners while nothing in the sandbox runs as the host's root.
 * Argument: the user namespace file. Stdin: one "ro|rw<TAB>source<TAB>target" line per mount, in order.
 */
export const IDMAP_PY = String.raw`
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_open_tree, SYS_move_mount, SYS_mount_setattr = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_EMPTY_PATH = 1, 0o2000000, 0x1000
MOVE_MOUNT_F_EMPTY_PATH, MOUNT_ATTR_RDONLY, MOUNT_ATTR_IDMAP = 0x4, 0x1, 0x100000
class MountAttr(ctypes.Structure):
    _fields_ = [('attr_set', ctypes.c_uint64), ('attr_clr', ctypes.c_uint64), ('propagation', ctypes.c_uint64), ('userns_fd', ctypes.c_uint64)]
def call(what, *args):
    if libc.syscall(*args) < 0:
        sys.exit('kiln sandbox: %s: %s' % (what, os.strerror(ctypes.get_errno())))
userns = os.open(sys.argv[1], os.O_RDONLY)
for line in sys.stdin.read().splitlines():
    mode, src, dst = line.split('\t')
    fd = libc.syscall(SYS_open_tree, -100, src.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    if fd < 0:
        sys.exit('kiln sandbox: open_tree %s: %s' % (src, os.strerror(ctypes.get_errno())))
    attr = MountAttr(MOUNT_ATTR_IDMAP | (MOUNT_ATTR_RDONLY if mode == 'ro' else 0), 0, 0, userns)
    call('idmapped mount of %s (the filesystem must support idmapped mounts: ext4, xfs, btrfs, tmpfs on Linux 6.3+)' % src,
         SYS_mount_setattr, fd, b'', AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
    call('move_mount to %s' % dst, SYS_move_mount, fd, b'', -100, dst.encode(), MOVE_MOUNT_F_EMPTY_PATH)
    os.close(fd)
`;
