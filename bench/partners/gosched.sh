#!/usr/bin/env bash
# bench/partners/gosched.sh: issue 16's partner measurement with map-op
# probes off on races where each side calls runtime.Gosched() after every
# access (testdata/victims/diagnose, modes gosched-ww, gosched-rw,
# gosched-iw; Go 1.26): N crashes per kind (default 30), and for each kind
# how often the other goroutine was named as a partner and by which
# evidence. Root only. Results go in docs/partners.md with the machine.
#
#	bench/partners/gosched.sh [N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
n="${1:-30}"
cd "$root"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) vCPU, loadavg $(cat /proc/loadavg)" >&2
MAPSENTRY_GOSCHED_N="$n" go test ./integration -run '^TestDiagnoseGoschedPartners$' -count=1 -timeout 60m -v 2>&1 |
	grep -E 'diagnose_test.go|^(--- |ok|FAIL)'
echo "loadavg after: $(cat /proc/loadavg)" >&2
