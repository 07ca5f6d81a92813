#!/usr/bin/env bash
# bench/crashloop: issue 16's crash-loop measurement. A victim crashing of
# concurrent map writes ~50 ms after start is restarted 100 ms after each
# exit for S seconds (default 60) under a daemon with capture.loop.max_full
# 5 (interval 1h, so the whole run is one interval); integration's
# TestCrashLoop counts full captures and counted crashes and measures the
# daemon's CPU time and the store's growth, and writes them as JSON.
# Root only. Results go in docs/crashsite.md with the machine.
#
#	bench/crashloop/run.sh [S] [OUT]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
s="${1:-60}"
out="${2:-$root/bench/crashloop/result.json}"
cd "$root"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) vCPU, loadavg $(cat /proc/loadavg)" >&2
MAPSENTRY_CRASHLOOP_SECONDS="$s" MAPSENTRY_CRASHLOOP_OUT="$out" \
	go test ./integration -run '^TestCrashLoop$' -count=1 -timeout 30m -v 2>&1 |
	grep -E 'group_test.go|^(--- |ok|FAIL)'
cat "$out"
