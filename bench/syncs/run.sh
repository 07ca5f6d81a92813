#!/bin/bash
# bench/syncs/run.sh [REV]: how many fsync/fdatasync calls the daemon makes
# on the freeze path (from the victim's release into its crash until its
# SIGCONT) and after it, for one crash, traced with strace. REV: a git
# revision to build instead of the working tree (e.g. main). Needs root and
# strace. docs/freeze.md has the figures.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d /tmp/mapsentry-syncs-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
src=$root
if [ -n "${1:-}" ]; then
	mkdir "$tmp/src" && git -C "$root" archive "$1" | tar -x -C "$tmp/src" && src=$tmp/src
fi
(cd "$src" && go build -o "$tmp/mapsentry" ./cmd/mapsentry)
mkdir "$tmp/bin"
(cd "$root/testdata/victims/crash" && CGO_ENABLED=0 GOWORK=off go build -o "$tmp/bin/victim" .)
export MAPSENTRY_SOCKET=$tmp/sock MAPSENTRY_STATE_DIR=$tmp/state MAPSENTRY_INSTANCE=bench-syncs-$$ \
	MAPSENTRY_DISCOVERY_INCLUDE="$tmp/bin/**" MAPSENTRY_CONFIG=$tmp/none.yaml MAPSENTRY_EXPORT_ENABLED=false \
	MAPSENTRY_DISCOVERY_RESCAN=500ms
echo '{}' >"$tmp/none.yaml"
strace -f -tt -e trace=fsync,fdatasync,kill -o "$tmp/trace" "$tmp/mapsentry" daemon 2>"$tmp/log" &
tracer=$!
for _ in $(seq 200); do "$tmp/mapsentry" status >/dev/null 2>&1 && break; sleep 0.1; done
mkfifo "$tmp/in"
"$tmp/bin/victim" writes wait <"$tmp/in" >/dev/null 2>&1 &
victim=$!
exec 3>"$tmp/in"
for _ in $(seq 200); do "$tmp/mapsentry" ps -o json 2>/dev/null | grep -qw "$victim" && break; sleep 0.1; done
sleep 0.5
released=$(date +%H:%M:%S.%6N)
echo go >&3
code=0
wait "$victim" || code=$?
exec 3>&-
sleep 1
kill -INT "$(pgrep -P "$tracer")"
wait "$tracer" || true
cont=$(grep -m1 "kill($victim, SIGCONT)" "$tmp/trace" | awk '{print $2}')
syncs() { awk -v a="$1" -v b="$2" '$2 >= a && $2 <= b && /fsync|fdatasync/' "$tmp/trace" | wc -l; }
echo "victim exit $code; released $released, SIGCONT $cont"
echo "fsync/fdatasync on the freeze path: $(syncs "$released" "$cont")"
echo "fsync/fdatasync after SIGCONT until the daemon stopped: $(syncs "$cont" 99)"
