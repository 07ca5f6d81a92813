#!/usr/bin/env bash
# bench/partners: the full partner-naming measurement of issue 5. It runs
# integration's TestPartnersNamed with N crashes per build (6 builds: Go
# 1.19, 1.26, 1.27.3, stripped and not; so 2N per toolchain), once with
# map-op probes armed (mapops.mode always) and once with them off, and
# writes every run's measurement as JSON beside the summary. Root only.
#
#	bench/partners/run.sh [N] [OUTDIR]     (default N=50: 100 per toolchain)
#
# Too slow for the suite (which runs N=5 armed); results go in
# docs/partners.md with the machine they were taken on.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
n="${1:-50}"
out="${2:-$root/bench/partners/results}"
mkdir -p "$out"
cd "$root"
for mode in always off; do
	echo "== map-op probes: $mode, $n crashes per build" >&2
	MAPSENTRY_PARTNERS_N="$n" MAPSENTRY_PARTNERS_MAPOPS="$mode" \
		MAPSENTRY_PARTNERS_OUT="$out/runs-$mode.json" \
		go test ./integration -run '^TestPartnersNamed$' -count=1 -timeout 90m -v 2>&1 |
		grep -E 'partners_test.go|^(--- |ok|FAIL)' | tee "$out/summary-$mode.txt" || true
done
python3 - "$out" <<'PY'
import json, sys, collections
out = sys.argv[1]
for mode in ("always", "off"):
    try:
        runs = json.load(open(f"{out}/runs-{mode}.json"))
    except FileNotFoundError:
        continue
    tc = collections.defaultdict(lambda: [0, 0, 0])
    ev = collections.Counter()
    unfrozen = livelocked = 0
    for r in runs:
        if r.get("unfrozen"):
            unfrozen += 1
            continue
        if r.get("livelock"):
            livelocked += 1
            continue
        t = tc[r["build"].rstrip("s")]
        t[0] += 1; t[1] += r["addr_ok"]; t[2] += r["partner_ok"]
        ev[r.get("evidence") or "miss"] += 1
    print(f"mode {mode}:")
    for k in sorted(tc):
        n, a, p = tc[k]
        print(f"  {k}: {n} crashes, map address {a}/{n} ({100*a/n:.0f}%), other writer named {p}/{n} ({100*p/n:.0f}%)")
    print("  evidence of the partner naming the other writer:", dict(ev))
    print("  processes not held frozen (not counted):", unfrozen)
    print("  victims livelocked by the race, no fatal error (not counted):", livelocked)
PY
