#!/usr/bin/env bash
# nspawn-rootfs.sh builds, once, the Debian bookworm root file system in
# which integration/systemd_test.go boots a real systemd (systemd-nspawn
# --boot) to test mapsentry as an installed service (docs/install.md).
#
# Where: $MAPSENTRY_NSPAWN_ROOTFS, default <repo>/.cache/nspawn/bookworm
# (outside the tracked files; the tests never write into it: each run boots
# an overlay of it, so one build serves every run). A stamp records the
# hash of this script: the build runs again only when the script changes or
# the tree is missing. About 3 minutes and 250 MB from the Debian archive.
#
# Usage: scripts/nspawn-rootfs.sh   (root; prints the path on stdout)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${MAPSENTRY_NSPAWN_ROOTFS:-$root/.cache/nspawn/bookworm}"
stamp="$dest.stamp"
# What a minimal systemd host needs, and nothing for mapsentry itself:
# `make install DESTDIR=` brings the daemon, and its defaults must work in
# exactly this tree (no /etc/hosts, no DNS).
packages=systemd,systemd-sysv,dbus,libpam-systemd
want="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
if [[ -d "$dest/usr/lib/systemd" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
	echo "$dest"
	exit 0
fi
for tool in mmdebstrap systemd-nspawn; do
	command -v "$tool" >/dev/null || { echo "nspawn-rootfs: $tool missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
if [[ $(id -u) -ne 0 ]]; then
	echo "nspawn-rootfs: need root to build $dest" >&2
	exit 1
fi

start=$(date +%s)
mkdir -p "$(dirname "$dest")"
tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "nspawn-rootfs: mmdebstrap bookworm ($packages) into $dest" >&2
# The mirror is the one this machine's apt already uses.
mmdebstrap --quiet --variant=minbase --include="$packages" \
	--customize-hook='echo mapsentry-test >"$1/etc/hostname"' \
	--customize-hook='rm -f "$1/etc/machine-id" && : >"$1/etc/machine-id"' \
	bookworm "$tmp/root" >&2
rm -rf "$dest"
mv "$tmp/root" "$dest"
echo "$want" >"$stamp"
echo "nspawn-rootfs: done in $(( $(date +%s) - start ))s" >&2
echo "$dest"
