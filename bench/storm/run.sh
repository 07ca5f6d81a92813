#!/usr/bin/env bash
# bench/storm: the freeze measurements of issue 13, on the real daemon, as
# integration tests with their counts raised. Root only.
#
#	bench/storm/run.sh [REPS] [OUTDIR]     (default REPS=10)
#
#  1. storm: 60 victims crash at the same instant, REPS/2 times: frozen time
#     from the BPF event to the release (p50, p90, p99, max), holds used,
#     reports complete (map, partners, goroutines, nothing cut).
#  2. stop: SIGTERM 0/10/100/500 ms into a 60-victim storm, REPS times each;
#     kill: SIGKILL then restart, the same: victims exited 2 / left stopped.
#  3. budget: freeze.max=5ms, a 10,000-goroutine victim, 50 crashes: frozen
#     time from the BPF event (max must stay under 10 ms).
#  4. holds: ptrace, SIGSTOP and a late hold compared, 20 crashes each.
# Results go to OUTDIR as JSON and summary.txt, with the machine and its
# load; the figures belong in docs/freeze.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
reps="${1:-10}"
out="${2:-$root/bench/storm/results}"
mkdir -p "$out"
cd "$root"
sum="$out/summary.txt"
{
	echo "bench/storm $(date -u +%FT%TZ) $(git rev-parse --short HEAD)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$sum"
run() { # name, test regexp, env...
	local name="$1" re="$2"
	shift 2
	echo "== $name" | tee -a "$sum"
	env "$@" MAPSENTRY_REQUIRE_PRIVILEGED=1 go test ./integration -run "$re" -count=1 -timeout 120m -v 2>&1 |
		grep -E '(storm|budget|holds)_test.go|^(--- |ok|FAIL)' | grep -v '^    --- PASS' | tee "$out/$name.log" | tee -a "$sum" || true
	echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$sum"
}
run storm '^TestStormReports$' MAPSENTRY_STORM_REPS=$(((reps + 1) / 2)) MAPSENTRY_STORM_OUT="$out/storm.json"
run stop '^(TestStormStop|TestStormKill)$' MAPSENTRY_STORM_REPS="$reps"
run budget '^TestFreezeBudget$' MAPSENTRY_BUDGET_RUNS=50 MAPSENTRY_BUDGET_OUT="$out/budget.json"
run holds '^TestHoldsCompared$' MAPSENTRY_HOLDS_N=20 MAPSENTRY_HOLDS_OUT="$out/holds.json"
python3 - "$out" <<'PY' | tee -a "$sum"
import json, sys
out = sys.argv[1]
def pct(xs, p):
    xs = sorted(xs)
    return xs[int(p * (len(xs) - 1))] / 1e6 if xs else float("nan")
try:
    runs = json.load(open(f"{out}/storm.json"))
    f = [r["frozen_ns"] for r in runs]
    holds = {}
    for r in runs:
        holds[r["hold"]] = holds.get(r["hold"], 0) + 1
    print(f"storm: {len(f)} crashes, frozen ms p50 {pct(f,.5):.1f} p90 {pct(f,.9):.1f} p99 {pct(f,.99):.1f} "
          f"max {pct(f,1):.1f}; complete {sum(r['complete'] for r in runs)}/{len(runs)}; holds {holds}")
    stages = sorted({k for r in runs for k in r.get("stages_ns", {})})
    print("  capture stages while held, ms: " + "; ".join(
        f"{s} p50 {pct([r['stages_ns'][s] for r in runs if s in r.get('stages_ns', {})], .5):.2f} "
        f"p90 {pct([r['stages_ns'][s] for r in runs if s in r.get('stages_ns', {})], .9):.2f}" for s in stages))
except FileNotFoundError:
    pass
import re
try:
    rounds = {}
    for line in open(f"{out}/stop.log"):
        m = re.search(r"round TestStorm\w+/(SIG\w+)\+(\S+)#\d+: (\d+) victims, (\d+) exited 2, (\d+) left stopped, (\d+) livelocked", line)
        if not m:
            continue
        a = rounds.setdefault((m.group(1), m.group(2)), [0, 0, 0, 0, 0])
        a[0] += 1
        for i in range(4):
            a[i + 1] += int(m.group(3 + i))
    for (sig, after), a in sorted(rounds.items()):
        print(f"{sig} +{after}: {a[0]} rounds, {a[1]} victims, {a[2]} exited 2, {a[3]} left stopped, {a[4]} livelocked")
except FileNotFoundError:
    pass
try:
    runs = json.load(open(f"{out}/budget.json"))
    f = [r["frozen_ns"] for r in runs]
    print(f"budget 5ms: {len(f)} crashes, frozen ms p50 {pct(f,.5):.2f} p99 {pct(f,.99):.2f} max {pct(f,1):.2f}; "
          f"over 10 ms: {sum(x > 10e6 for x in f)}; deadline hit {sum(r['deadline_hit'] for r in runs)}")
except FileNotFoundError:
    pass
PY
