#!/usr/bin/env bash
# nspawn-rootfs.sh builds, once, the Debian bookworm root file system in
# which integration/systemd_test.go boots a real systemd (systemd-nspawn
# --boot) to test mapsentry as an installed service (docs/install.md).
#
# Where: $MAPSENTRY_NSPAWN_ROOTFS, default <repo>/.cache/nspawn/bookworm
# (outside the tracked files). The tests never write into it: each run
# boots an overlay of it, so one build serves every run. A stamp beside it
# records the recipe; the build runs again only when the recipe changes or
# the tree is missing. About 3 minutes and 250 MB from the Debian archive
# this machine's apt uses. Concurrent runs wait for each other (flock).
#
# Usage: scripts/nspawn-rootfs.sh   (root; prints the path on stdout)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${MAPSENTRY_NSPAWN_ROOTFS:-$root/.cache/nspawn/bookworm}"
stamp="$dest.stamp"
# What a minimal systemd host needs, and nothing for mapsentry itself:
# `make install DESTDIR=` brings the daemon, and its defaults must work in
# exactly this tree (no /etc/hosts, no DNS resolver).
suite=bookworm
packages=systemd,systemd-sysv,dbus,libpam-systemd
hostname=mapsentry-test
want="$(printf '%s\n' "$suite" minbase "$packages" "$hostname" empty-machine-id | sha256sum | cut -d' ' -f1)"
fresh() { [[ -d "$dest/usr/lib/systemd" ]] && [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]]; }
if fresh; then
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
mkdir -p "$(dirname "$dest")"
if [[ -z "${NSPAWN_ROOTFS_LOCKED:-}" ]]; then
	NSPAWN_ROOTFS_LOCKED=1 exec flock "$dest.lock" "${BASH_SOURCE[0]}"
fi
if fresh; then # built by a concurrent run meanwhile
	echo "$dest"
	exit 0
fi

start=$(date +%s)
tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "nspawn-rootfs: mmdebstrap $suite ($packages) into $dest" >&2
mmdebstrap --quiet --variant=minbase --include="$packages" \
	--customize-hook="echo $hostname >\"\$1/etc/hostname\"" \
	--customize-hook='rm -f "$1/etc/machine-id" && : >"$1/etc/machine-id"' \
	"$suite" "$tmp/root" >&2
rm -rf "$dest"
mv "$tmp/root" "$dest"
echo "$want" >"$stamp"
echo "nspawn-rootfs: done in $(( $(date +%s) - start ))s" >&2
echo "$dest"
