#!/usr/bin/env bash
# build-jaeger.sh builds the Jaeger v2 all-in-one binary pinned in
# tools/jaeger/go.mod (a separate module, so Jaeger never enters the main
# module's dependency graph) into .cache/bin/jaeger at the repository root.
#
# Idempotent (scripts/build-go-tool.sh): the build runs again only when the
# tools module's go.mod or go.sum change or the binary is missing. On a
# 2-core machine with a cold module and build cache the build takes several
# minutes (see docs/export.md for timings).
#
# Usage: scripts/build-jaeger.sh [output-dir]   (default: <repo>/.cache/bin)
# Prints the path of the binary on stdout.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/build-go-tool.sh" tools/jaeger github.com/jaegertracing/jaeger/cmd/jaeger jaeger "$@"
