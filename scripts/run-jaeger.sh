#!/usr/bin/env bash
# run-jaeger.sh runs Jaeger v2 all-in-one (in-memory storage) bound to
# 127.0.0.1 only, with a config written from the defaults of
# cmd/jaeger/internal/all-in-one.yaml trimmed to what mapsentry uses: the
# OTLP receiver (gRPC and HTTP), in-memory storage and the query service
# (HTTP API + UI). The collector's own Prometheus endpoint (default
# 0.0.0.0:8888 in some configs) is switched off.
#
# The script execs Jaeger, so its PID is Jaeger's: stop it with kill PID.
# The binary is built by scripts/build-jaeger.sh when missing.
# With --write-config it only writes the config and prints its path, for a
# caller (the Go tests) that starts the binary itself and so holds its PID.
#
# Environment (defaults are Jaeger's usual ports; tests pass free ones):
#   JAEGER_OTLP_GRPC_PORT   4317
#   JAEGER_OTLP_HTTP_PORT   4318
#   JAEGER_QUERY_HTTP_PORT  16686   (UI and /api/traces)
#   JAEGER_QUERY_GRPC_PORT  16685
#   JAEGER_DIR              where config.yaml is written (default: a new temp dir)
#   JAEGER_BIN              the binary (default: <repo>/.cache/bin/jaeger)
#   JAEGER_UI_ASSETS        a built jaeger-ui directory (default: <repo>/.cache/jaeger-ui
#                           when it holds index.html). A Jaeger built from the Go
#                           module proxy has no UI of its own, only a placeholder
#                           page; scripts/build-jaeger-ui.sh builds one.
#
# Example: scripts/run-jaeger.sh &   then open http://127.0.0.1:16686/
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${JAEGER_BIN:-$root/.cache/bin/jaeger}"
write_only=false
if [[ "${1:-}" == "--write-config" ]]; then
	write_only=true
elif [[ ! -x "$bin" ]]; then
	bin="$("$root/scripts/build-jaeger.sh")"
fi
dir="${JAEGER_DIR:-$(mktemp -d -t mapsentry-jaeger.XXXXXX)}"
mkdir -p "$dir"
host=127.0.0.1
ui="${JAEGER_UI_ASSETS:-$root/.cache/jaeger-ui}"
ui_config=""
if [[ -f "$ui/index.html" ]]; then
	ui_config="    ui:
      assets_path: \"$ui\""
fi

cat >"$dir/config.yaml" <<YAML
# Written by mapsentry scripts/run-jaeger.sh; every listener on loopback.
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info

extensions:
  jaeger_query:
    # On by default in Jaeger v2: the query service would trace itself to
    # localhost:4317 (maybe a user's real Jaeger) and wait 10s for it at
    # shutdown.
    enable_tracing: false
$ui_config
    storage:
      traces: memstore
    http:
      endpoint: "$host:${JAEGER_QUERY_HTTP_PORT:-16686}"
    grpc:
      endpoint: "$host:${JAEGER_QUERY_GRPC_PORT:-16685}"

  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "$host:${JAEGER_OTLP_GRPC_PORT:-4317}"
      http:
        endpoint: "$host:${JAEGER_OTLP_HTTP_PORT:-4318}"

processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
YAML

if $write_only; then
	echo "$dir/config.yaml"
	exit 0
fi
echo "run-jaeger: config $dir/config.yaml; UI http://$host:${JAEGER_QUERY_HTTP_PORT:-16686}/" >&2
exec "$bin" --config "file:$dir/config.yaml"
