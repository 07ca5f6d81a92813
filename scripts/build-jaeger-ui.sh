#!/usr/bin/env bash
# build-jaeger-ui.sh builds the Jaeger UI into .cache/jaeger-ui, which
# scripts/run-jaeger.sh then serves (jaeger_query.ui.assets_path).
#
# Why: a Jaeger built from the Go module proxy (scripts/build-jaeger.sh)
# embeds only a placeholder page; Jaeger's release process builds the UI
# with npm from the jaeger-ui repository, which is not a Go module and not
# published to npm. Only the screenshot in docs/ and people who want to
# click around need it; the tests use the query API and do not.
#
# Usage: scripts/build-jaeger-ui.sh JAEGER_UI_SRC
#   JAEGER_UI_SRC: a checkout (or export) of github.com/jaegertracing/jaeger-ui
#   at the tag matching tools/jaeger (v1.76.0).
# Needs node >= 20.19 and npm; the sources ask for node 24 but build with 20.
# About 2 min for npm ci and 3-6 min for the build on 2 cores.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${1:?usage: build-jaeger-ui.sh JAEGER_UI_SRC}"
out="$root/.cache/jaeger-ui"
cd "$src"
# --ignore-scripts: the root "prepare" script runs husky, which needs .git.
npm ci --ignore-scripts --engine-strict=false --no-audit --no-fund --loglevel=error
npm run --workspace @jaegertracing/plexus build
# REACT_APP_VSN_STATE is normally computed from git for analytics; empty here.
(cd packages/jaeger-ui && NODE_ENV=production REACT_APP_VSN_STATE='{}' npx vite build)
rm -rf "$out"
cp -r packages/jaeger-ui/build "$out"
echo "$out"
