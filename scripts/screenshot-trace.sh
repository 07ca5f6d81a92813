#!/usr/bin/env bash
# screenshot-trace.sh saves a PNG of a trace in the Jaeger UI, taken with
# headless Chromium (Debian package `chromium`) driven by puppeteer-core
# (installed from npm into .cache/shot on first use). The Jaeger must serve
# a real UI: see scripts/build-jaeger-ui.sh.
#
# Usage: scripts/screenshot-trace.sh http://127.0.0.1:16686/trace/<id> docs/jaeger-trace.png
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
url="${1:?usage: screenshot-trace.sh URL OUT.png}"
out="${2:?usage: screenshot-trace.sh URL OUT.png}"
command -v chromium >/dev/null || { echo "screenshot-trace: install Debian's chromium" >&2; exit 1; }
shot="$root/.cache/shot"
if [[ ! -d "$shot/node_modules/puppeteer-core" ]]; then
	mkdir -p "$shot"
	npm install --prefix "$shot" --no-audit --no-fund --loglevel=error puppeteer-core@25.16.0
fi
NODE_PATH="$shot/node_modules" node "$root/scripts/screenshot-trace.cjs" "$url" "$out"
