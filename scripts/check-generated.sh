#!/usr/bin/env bash
# check-generated.sh regenerates the bpf2go output with clang and fails if
# it differs from what is in the tree: the committed objects are what
# `go build` embeds, so they must be exactly what the C source produces.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/bpf"
saved=$(mktemp -d)
trap 'rm -rf "$saved"' EXIT
cp -- *_bpfel.go *_bpfel.o "$saved/"
go generate .
status=0
for f in "$saved"/*; do
	if ! cmp -s "$f" "$(basename "$f")"; then
		echo "check-generated: bpf/$(basename "$f") differs from its source; run 'make generate' and commit" >&2
		status=1
	fi
done
[[ $status -eq 0 ]] && echo "check-generated: bpf2go output matches bpf/*.c" >&2
exit $status
