#!/usr/bin/env bash
# Installs Kiln's host tools from Debian's packages (the list `kiln doctor` checks), and with --tests
# also the tools only the test suite runs (npm test's pretest passes it). Lists: scripts/host-packages.mjs.
# Safe to re-run: apt-get does nothing when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  '') lists=hostPackages ;;
  --tests) lists='hostPackages, ...m.testPackages' ;;
  *) echo "usage: scripts/setup-host.sh [--tests]" >&2; exit 2 ;;
esac
pkgs=$(node -e "import('./scripts/host-packages.mjs').then(m => console.log([...m.${lists}].join(' ')))")
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null | awk '$4!="installed"{print $1}'; for p in $pkgs; do dpkg-query -W "$p" >/dev/null 2>&1 || echo "$p"; done)
missing=$(echo "$missing" | sort -u | tr '\n' ' ')
if [ -n "${missing// /}" ]; then
  if [ "$(id -u)" != 0 ]; then echo "missing host packages: $missing (run as root, or: sudo apt-get install $missing)" >&2; exit 1; fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
