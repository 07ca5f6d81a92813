#!/usr/bin/env bash
# deps.sh installs what building and testing mapsentry needs on a fresh
# Debian machine of this project's kind (run as root), and nothing more:
#   clang, llvm, libbpf-dev  - regenerate the BPF objects with bpf2go
#   golang-1.19-go           - Go 1.19 victims (classic maps)
#   systemd, util-linux      - systemd-analyze and setpriv for the service tests
#   go1.27.3                 - fetched through the Go module proxy (GOTOOLCHAIN)
#   Jaeger v2 all-in-one     - built from the Go module proxy (scripts/build-jaeger.sh)
# Idempotent: each step is skipped when already satisfied.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need=()
command -v clang >/dev/null || need+=(clang llvm)
[[ -f /usr/include/bpf/bpf_helpers.h ]] || need+=(libbpf-dev)
[[ -x /usr/lib/go-1.19/bin/go ]] || need+=(golang-1.19-go)
[[ -f /usr/include/x86_64-linux-gnu/asm/types.h ]] || need+=(linux-libc-dev)
# integration/service_test.go: systemd-analyze checks the unit, setpriv
# runs the daemon with exactly the unit's capabilities.
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v setpriv >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps: need root to install: ${need[*]}" >&2
		exit 1
	fi
	echo "deps: apt-get install ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The Go 1.27.3 toolchain for the newest victims, through the module proxy.
GOTOOLCHAIN=go1.27.3 go version >/dev/null

if [[ "${MAPSENTRY_SKIP_JAEGER:-}" != 1 && -x "$root/scripts/build-jaeger.sh" ]]; then
	"$root/scripts/build-jaeger.sh" >/dev/null
fi
echo "deps: ok" >&2
