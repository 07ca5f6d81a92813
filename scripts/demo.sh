#!/usr/bin/env bash
# demo.sh shows a crash as a trace in Jaeger, end to end on this host:
#   1. a local Jaeger v2 (scripts/run-jaeger.sh, loopback only),
#   2. the mapsentry daemon pointed at it (its own socket and state dir),
#   3. `mapsentry selftest`, which runs a Go program that dies of
#      "concurrent map writes" through the daemon,
#   4. the Jaeger UI URL of that crash's trace, printed.
# The daemon is stopped at the end; Jaeger keeps running so the trace can be
# looked at (its PID is printed). Needs root, like the daemon. The demo
# daemon is scoped (discovery.include) to its own temp dir, where selftest
# writes its program, so it leaves every other Go process on the host alone.
#
# Usage: sudo scripts/demo.sh
# Ports: JAEGER_OTLP_GRPC_PORT (4317), JAEGER_QUERY_HTTP_PORT (16686), ...
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d -t mapsentry-demo.XXXXXX)"
grpc_port="${JAEGER_OTLP_GRPC_PORT:-4317}"
query_port="${JAEGER_QUERY_HTTP_PORT:-16686}"
query="http://127.0.0.1:$query_port"
say() { echo "demo: $*" >&2; }

if curl -fsS -o /dev/null "$query/api/services" 2>/dev/null; then
	say "something already answers on $query; set JAEGER_QUERY_HTTP_PORT (and the other JAEGER_* ports) to free ones"
	exit 1
fi

"$root/scripts/build-jaeger.sh" >/dev/null
say "building mapsentry"
(cd "$root" && go build -o "$work/mapsentry" ./cmd/mapsentry)

JAEGER_DIR="$work/jaeger" "$root/scripts/run-jaeger.sh" >"$work/jaeger.log" 2>&1 &
jaeger_pid=$!
for _ in $(seq 100); do
	curl -fsS -o /dev/null "$query/api/services" 2>/dev/null && break
	kill -0 "$jaeger_pid" 2>/dev/null || { say "jaeger exited:"; tail -20 "$work/jaeger.log" >&2; exit 1; }
	sleep 0.2
done
say "jaeger pid $jaeger_pid, UI $query"

sock="$work/mapsentry.sock"
MAPSENTRY_DISCOVERY_INCLUDE="$work/**" \
	MAPSENTRY_EXPORT_ENABLED=true MAPSENTRY_EXPORT_OTLP_ENDPOINT="127.0.0.1:$grpc_port" MAPSENTRY_EXPORT_OTLP_INSECURE=true \
	"$work/mapsentry" daemon --socket "$sock" --state-dir "$work/state" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
trap 'kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true' EXIT
for _ in $(seq 150); do
	[[ -S "$sock" ]] && break
	kill -0 "$daemon_pid" 2>/dev/null || { say "daemon exited:"; tail -20 "$work/daemon.log" >&2; exit 1; }
	sleep 0.2
done
say "daemon pid $daemon_pid, socket $sock"

"$work/mapsentry" selftest --socket "$sock" --keep -o json >"$work/selftest.json" || true
jq -r '.steps[] | "  \(.status)\t\(.name)\t\(.detail // "")"' "$work/selftest.json" >&2 || true
id="$(jq -r '.crash_id // empty' "$work/selftest.json")"
if [[ -z "$id" ]]; then
	say "the self-test produced no crash report; daemon log: $work/daemon.log"
	exit 1
fi
# exporter.TraceID: the first 16 bytes of SHA-256("mapsentry/crash/" + id).
trace="$(printf 'mapsentry/crash/%s' "$id" | sha256sum | cut -c1-32)"
for _ in $(seq 150); do
	curl -fsS -o /dev/null "$query/api/traces/$trace" 2>/dev/null && break
	sleep 0.2
done
curl -fsS -o /dev/null "$query/api/traces/$trace" || { say "trace $trace not in Jaeger; daemon log: $work/daemon.log"; exit 1; }

say "crash $id"
echo "$query/trace/$trace"
say "Jaeger keeps running: kill $jaeger_pid to stop it (logs in $work)"
