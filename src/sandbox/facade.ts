/**
 * The build-time facade: what a playbook written for a live machine needs to find while the image
 * is only a tree in a sandbox. It lives in the image's /run/kiln (a tmpfs of the sandbox, so none of
 * it reaches the image) and only Ansible's modules see it, through the interpreter wrapper that the
 * build's inventory names as ansible_python_interpreter (it survives `become`, which resets PATH).
 *
 * - `hostnamectl`: without systemd-hostnamed, the static name is /etc/hostname in the image, the
 *   pretty name PRETTY_HOSTNAME in /etc/machine-info, the transient one the sandbox's UTS name.
 * - `modprobe`: loads and unloads in the sandbox's module table (/run/kiln/state/modules, which
 *   modules read as /proc/modules) after checking the module exists for the image's kernel; never
 *   touches a kernel. `-n` (dry run) is the real modprobe against the image's kernel.
 * - Python modules see the image's kernel as the running one (platform.release()) and the sandbox's
 *   module table as /proc/modules; every other file, command and setting is the real one.
 *
 * Everything else a live-host task does acts on the sandbox's own namespaces and is real there:
 * sysctl (a writable copy of the host's /proc/sys), mount, iptables, ip link, hostname, domainname.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KILN_RUN } from './layout.js';

/** Inside the image: the facade, and the interpreter Ansible runs modules with. */
export const FACADE = `${KILN_RUN}/facade`;
export const FACADE_PYTHON = `${FACADE}/python3`;
const STATE = `${KILN_RUN}/state`;
const TMP = `${KILN_RUN}/tmp`;

/** String.raw for shell text: `\${...}` is the shell's own expansion, `${...}` a TypeScript value. */
function sh(s: TemplateStringsArray, ...v: unknown[]): string {
  return String.raw(s, ...v).replaceAll('\\${', '${');
}

const KERNEL_RELEASE = sh`image_kernel() { # the image's kernel version: what /vmlinuz points at, else the newest /lib/modules entry
  t=$(readlink /vmlinuz 2>/dev/null || true)
  case $t in *vmlinuz-*) echo "\${t##*vmlinuz-}"; return ;; esac
  ls /lib/modules 2>/dev/null | sort -V | tail -n 1
}`;

export const PYTHON_WRAPPER = sh`#!/bin/sh
# Kiln build sandbox: the interpreter Ansible runs its modules with while an image is built.
PATH=${FACADE}/bin:\${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
PYTHONPATH=${FACADE}/python\${PYTHONPATH:+:$PYTHONPATH}
# Modules unpack themselves into the temp dir: keep that out of the image (and out from under a task
# that mounts over /tmp).
TMPDIR=${TMP}
export PATH PYTHONPATH TMPDIR
exec /usr/bin/python3 "$@"
`;

export const SITECUSTOMIZE = String.raw`# Kiln build sandbox: what Ansible modules see while an image is built (never installed in the image).
import builtins, importlib.util, os, platform, sys

def _image_kernel():
    try:
        target = os.path.basename(os.readlink('/vmlinuz'))
        if target.startswith('vmlinuz-'):
            return target[len('vmlinuz-'):]
    except OSError:
        pass
    try:
        versions = sorted(os.listdir('/lib/modules'))
        return versions[-1] if versions else None
    except OSError:
        return None

_kernel = _image_kernel()
if _kernel:
    platform.release = lambda: _kernel

_open = builtins.open
def _kiln_open(file, *args, **kwargs):
    if file == '/proc/modules':
        file = '${STATE}/modules'
    return _open(file, *args, **kwargs)
builtins.open = _kiln_open

# The image's own sitecustomize, if it has one, still runs.
_here = os.path.dirname(os.path.abspath(__file__))
for _dir in sys.path:
    _path = os.path.join(_dir or '.', 'sitecustomize.py')
    if os.path.abspath(_dir or '.') != _here and os.path.isfile(_path):
        _spec = importlib.util.spec_from_file_location('_image_sitecustomize', _path)
        if _spec and _spec.loader:
            _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break
`;

export const HOSTNAMECTL = sh`#!/bin/sh
# Kiln build sandbox: hostnamectl without systemd-hostnamed (nothing runs while an image is built).
# Static name: the image's /etc/hostname. Pretty name: PRETTY_HOSTNAME in /etc/machine-info.
# Transient name: the sandbox's own hostname (its UTS namespace), never the build host's.
set -eu
static= transient= pretty= cmd= name=
for a do
  case $a in
    --static) static=1 ;;
    --transient) transient=1 ;;
    --pretty) pretty=1 ;;
    -*) ;;
    *) if [ -z "$cmd" ]; then cmd=$a; else name=$a; fi ;;
  esac
done
: "\${cmd:=status}"
[ "$cmd" = hostname ] && cmd=\${name:+set-hostname}
: "\${cmd:=status}"
get_pretty() { sed -n 's/^PRETTY_HOSTNAME=//p' /etc/machine-info 2>/dev/null | sed 's/^"\(.*\)"$/\1/' | tail -n 1; }
set_pretty() {
  touch /etc/machine-info
  sed -i '/^PRETTY_HOSTNAME=/d' /etc/machine-info
  if [ -n "$1" ]; then printf 'PRETTY_HOSTNAME="%s"\n' "$1" >> /etc/machine-info; fi
  [ -s /etc/machine-info ] || rm -f /etc/machine-info
}
case $cmd in
  status)
    if [ -n "$static" ]; then cat /etc/hostname 2>/dev/null || true
    elif [ -n "$transient" ]; then hostname
    elif [ -n "$pretty" ]; then get_pretty
    else
      echo " Static hostname: $(cat /etc/hostname 2>/dev/null || echo n/a)"
      p=$(get_pretty); [ -z "$p" ] || echo "  Pretty hostname: $p"
      echo "Transient hostname: $(hostname)"
    fi ;;
  set-hostname)
    [ -n "$name" ] || { echo "hostnamectl: set-hostname needs a name" >&2; exit 1; }
    if [ -z "$static$transient$pretty" ]; then
      static=1; transient=1
      case $name in *[!A-Za-z0-9.-]*) set_pretty "$name" ;; *) set_pretty "" ;; esac
    elif [ -n "$pretty" ]; then set_pretty "$name"; fi
    short=$(printf '%s' "$name" | tr -cd 'A-Za-z0-9.-')
    if [ -n "$static" ]; then printf '%s\n' "$short" > /etc/hostname; fi
    if [ -n "$transient" ]; then hostname "$short"; fi ;;
  *) echo "hostnamectl: '$cmd' is not available while an image is built (Kiln build sandbox)" >&2; exit 1 ;;
esac
`;

export const MODPROBE = sh`#!/bin/sh
# Kiln build sandbox: modprobe acts on the sandbox's module table (${STATE}/modules, read as
# /proc/modules), never on a kernel: the image's kernel is not running. A module is "loaded" only
# if the real modprobe finds it for the image's kernel (dry run). Dry runs are the real modprobe.
set -eu
table=${STATE}/modules
${KERNEL_RELEASE}
real=/usr/sbin/modprobe; [ -x "$real" ] || real=/sbin/modprobe
kver=$(image_kernel)
remove= dry= first= all= names=
for a do
  case $a in
    -r|--remove) remove=1 ;;
    -n|--dry-run|--show) dry=1 ;;
    --first-time) first=1 ;;
    -a|--all) all=1 ;;
    -*) ;;
    *=*) ;;
    *) if [ -z "$names" ] || [ -n "$all" ] || [ -n "$remove" ]; then names="$names $a"; fi ;;
  esac
done
if [ -n "$dry" ]; then exec "$real" -S "$kver" "$@"; fi
rc=0
for m in $names; do
  key=$(printf '%s' "$m" | tr - _)
  if [ -n "$remove" ]; then
    if grep -q "^$key " "$table"; then grep -v "^$key " "$table" > "$table.new" || true; cat "$table.new" > "$table"; rm -f "$table.new"
    elif [ -n "$first" ]; then echo "modprobe: FATAL: Module $m is not in kernel." >&2; rc=1; fi
  else
    if grep -q "^$key " "$table"; then
      if [ -n "$first" ]; then echo "modprobe: ERROR: could not insert '$key': Module already in kernel" >&2; rc=1; fi
    elif "$real" -n -q -S "$kver" "$m"; then
      echo "$key 16384 0 - Live 0x0000000000000000" >> "$table"
    else
      echo "modprobe: FATAL: Module $m not found in directory /lib/modules/$kver" >&2; rc=1
    fi
  fi
done
exit $rc
`;

/** Writes the facade into dir (bound read-only at /run/kiln/facade in the image). */
export function writeFacade(dir: string): void {
  const files: [string, string][] = [
    ['python3', PYTHON_WRAPPER],
    ['python/sitecustomize.py', SITECUSTOMIZE],
    ['bin/hostnamectl', HOSTNAMECTL],
    ['bin/modprobe', MODPROBE],
  ];
  for (const [name, text] of files) {
    const p = join(dir, name);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, text);
    chmodSync(p, name.endsWith('.py') ? 0o644 : 0o755);
  }
}
