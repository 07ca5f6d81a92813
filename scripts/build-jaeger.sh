#!/usr/bin/env bash
# build-jaeger.sh builds the Jaeger v2 all-in-one binary pinned in
# tools/jaeger/go.mod (a separate module, so Jaeger never enters the main
# module's dependency graph) into .cache/bin/jaeger at the repository root.
#
# Idempotent: a stamp next to the binary records the hash of the tools
# module's go.mod and go.sum; the build runs again only when they change or
# the binary is missing. On a 2-core machine with a cold module and build
# cache the build takes several minutes (see docs/export.md for timings).
#
# Usage: scripts/build-jaeger.sh [output-dir]   (default: <repo>/.cache/bin)
# Prints the path of the binary on stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
outdir="${1:-$root/.cache/bin}"
bin="$outdir/jaeger"
stamp="$outdir/jaeger.stamp"
mod="$root/tools/jaeger"

want="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)"
if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$outdir"
start=$(date +%s)
echo "build-jaeger: building $(grep -m1 'jaegertracing/jaeger ' "$mod/go.mod" | awk '{print $1"@"$2}') into $bin" >&2
# GOWORK=off: a go.work at the root must not pull the main module in.
# CGO_ENABLED=0: a static binary; Jaeger needs no cgo.
(
	cd "$mod"
	GOWORK=off CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
		go build -trimpath -ldflags='-s -w' -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
)
mv "$bin.tmp" "$bin"
echo "$want" >"$stamp"
echo "build-jaeger: done in $(( $(date +%s) - start ))s" >&2
echo "$bin"
