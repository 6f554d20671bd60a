#!/usr/bin/env bash
# Builds Kiln's CI runner image (runner/Containerfile) with podman, from this checkout.
#
#   scripts/runner-image.sh [--tag NAME] [--from-archive] [--host-ca] [-- podman build options...]
#
# --from-archive: the Debian 12 base is built here from Debian's signed archive with mmdebstrap and
# imported (for machines that reach Debian's mirror but not Docker Hub); otherwise the Containerfile's
# default, docker.io/library/debian:bookworm. The image is tagged kiln-runner:<Kiln's version> unless
# --tag says otherwise. --host-ca: the host's own CA certificates (/usr/local/share/ca-certificates,
# a TLS-inspecting proxy's) are trusted in the image too. Needs root (or rootless podman), podman, and mmdebstrap for --from-archive.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="kiln-runner:$(node -p "require('./package.json').version")"
from_archive=
host_ca=
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --from-archive) from_archive=1; shift ;;
    --host-ca) host_ca=1; shift ;;
    --) shift; break ;;
    *) echo "usage: scripts/runner-image.sh [--tag NAME] [--from-archive] [--host-ca] [-- podman build options]" >&2; exit 2 ;;
  esac
done
args=()
if [ -n "$from_archive" ]; then
  base=localhost/kiln-debian-base:bookworm
  # The same shape as Docker's debian:bookworm: minbase plus apt, from the archive mmdebstrap verifies.
  mmdebstrap --variant=minbase --mode=root --format=tar bookworm - http://deb.debian.org/debian \
    | podman import --message "Debian 12 from the archive (mmdebstrap)" - "$base" >/dev/null
  args+=(--build-arg "BASE=$base")
fi
if [ -n "$host_ca" ]; then
  if [ -d /usr/local/share/ca-certificates ]; then args+=(--volume /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
  else echo "runner-image: --host-ca: this host has no /usr/local/share/ca-certificates; the image trusts Debian's CAs only" >&2; fi
fi
podman build --network host -f runner/Containerfile -t "$tag" "${args[@]}" "$@" .
echo "$tag"
