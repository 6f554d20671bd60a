#!/usr/bin/env bash
# The main job: build the example image from a tagged git repository, boot it under BIOS and UEFI
# in QEMU, and check over SSH that it is the provisioned, versioned, sealed machine it should be.
# Installs the host tools it needs (as root). Usage: npm ci && npm run demo
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kiln="node $here/bin/kiln.js"
bash "$here/scripts/setup-host.sh"
[ -f "$here/dist/src/cli/main.js" ] || (cd "$here" && npx tsc -p tsconfig.json)

work=${KILN_DEMO_DIR:-/var/tmp/kiln-demo}
rm -rf "$work" && mkdir -p "$work"
cp -r "$here/examples/debian-web" "$work/web"
cd "$work/web"
git init -q -b main
git add -A
git -c user.name=Kiln -c user.email=demo@kiln.invalid commit -qm "web image"
git tag release-0.1.0

echo "== kiln build (release-0.1.0)"
$kiln build

img=".kiln/out/web-release-0.1.0"
echo "== kiln audit: the image is sealed"
$kiln audit "$img/web-release-0.1.0.raw"

check='set -e
. /etc/release; echo "release: $IMAGE_ID $IMAGE_VERSION"
grep -q "^IMAGE_VERSION=\"release-0.1.0\"" /etc/os-release
python3 -c "import urllib.request as u; print(u.urlopen(\"http://127.0.0.1/\").read().decode())" | grep -q "release-0.1.0" && echo "nginx serves the version page"
id app >/dev/null && echo "user app exists"
test -s /etc/ssh/ssh_host_ed25519_key.pub && echo "host keys generated at first boot: $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d" " -f2)"
test -s /etc/machine-id && echo "machine-id: $(cat /etc/machine-id)"
getent hosts "$(hostname)" >/dev/null && echo "its own hostname $(hostname) resolves locally (sudo does not wait on DNS)"'
for fw in bios uefi; do
  echo "== kiln boot ($fw)"
  $kiln boot --firmware "$fw" "$img/web-release-0.1.0.qcow2" -- "$check"
done
echo "demo passed: web@release-0.1.0 built, sealed, booted under BIOS and UEFI, and checked"
