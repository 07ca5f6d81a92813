#!/usr/bin/env bash
# build-go-tool.sh builds one tool pinned in its own module under tools/
# (so it never enters the main module's dependency graph) into a cache
# directory, from the Go module proxy. build-jaeger.sh and
# build-promtool.sh call it.
#
# Idempotent: a stamp next to the binary records the hash of the tools
# module's go.mod and go.sum; the build runs again only when they change
# or the binary is missing.
#
# Usage: scripts/build-go-tool.sh MODULE-DIR PACKAGE NAME [output-dir]
#   (default output-dir: <repo>/.cache/bin). Prints the binary's path.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/$1"
pkg="$2"
name="$3"
outdir="${4:-$root/.cache/bin}"
bin="$outdir/$name"
stamp="$outdir/$name.stamp"

want="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)"
fresh() { [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; }
if fresh; then
	echo "$bin"
	exit 0
fi

# One build at a time per tool: make deps and a test harness may both
# ask for it; the second waits and then finds it built.
mkdir -p "$outdir"
exec 9>"$outdir/$name.lock"
flock 9
if fresh; then
	echo "$bin"
	exit 0
fi
start=$(date +%s)
echo "build-go-tool: building $pkg ($1/go.mod) into $bin" >&2
# GOWORK=off: a go.work at the root must not pull the main module in.
# CGO_ENABLED=0: a static binary.
(
	cd "$mod"
	GOWORK=off CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
		go build -trimpath -ldflags='-s -w' -o "$bin.tmp" "$pkg"
)
mv -f "$bin.tmp" "$bin"
echo "$want" >"$stamp"
echo "build-go-tool: $name done in $(( $(date +%s) - start ))s" >&2
echo "$bin"
