#!/usr/bin/env bash
# build-promtool.sh builds Prometheus's promtool, pinned in
# tools/promtool/go.mod (its own module, like tools/jaeger: Prometheus never
# enters the main module's dependency graph), into .cache/bin/promtool. The
# exporter tests run `promtool check rules` and `promtool test rules` on
# deploy/prometheus/ with it.
#
# Idempotent (scripts/build-go-tool.sh). A cold build on a 2-core machine
# takes many minutes (31 min while other builds shared the machine,
# 2026-12-04).
#
# Usage: scripts/build-promtool.sh [output-dir]   (default: <repo>/.cache/bin)
# Prints the path of the binary on stdout.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/build-go-tool.sh" tools/promtool github.com/prometheus/prometheus/cmd/promtool promtool "$@"
