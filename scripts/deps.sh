#!/usr/bin/env bash
# deps.sh installs every program that a test or a make target runs, on a
# fresh Debian machine of this project's kind (Go, gcc, make and git come
# with the machine), and nothing more. Run as root; idempotent: each step
# is skipped when already satisfied.
#
# The lines below are the table of what is needed, and
# internal/repocheck's TestEveryProgramRunIsInstalled reads them: it fails
# when Go code (exec.Command, exec.CommandContext, exec.LookPath,
# testenv.Tool), a script or a make recipe runs a program that no line
# here provides. Add one line per program:
#   tool PROGRAM DEBIAN-PACKAGE   installed with apt when PROGRAM is not on PATH
#   path PATH DEBIAN-PACKAGE      installed with apt when PATH does not exist
#   build NAME SCRIPT             built by SCRIPT (from the Go module proxy,
#                                 cached by version, idempotent), in the
#                                 background while apt runs
# Built programs land in .cache/bin; the build logs in .cache/logs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need=()
builds=()
tool() { command -v "$1" >/dev/null || need+=("$2"); }
path() { [[ -e "$1" ]] || need+=("$2"); }
build() { builds+=("$1:$2"); }

# BPF objects: bpf2go runs clang and llvm-strip (make generate, check-generated).
tool clang clang
tool llvm-strip llvm
path /usr/include/bpf/bpf_helpers.h libbpf-dev
path /usr/include/x86_64-linux-gnu/asm/types.h linux-libc-dev
# Go 1.19 victims (classic maps); Go 1.27 comes through GOTOOLCHAIN below.
path /usr/lib/go-1.19/bin/go golang-1.19-go
# integration: bpftool counts the kernel's map-op links independently of
# the daemon (TestMapOpLinksRemoved, TestMapOpsOnCrash).
tool bpftool bpftool
# integration/service_test.go: systemd-analyze checks the unit, setpriv
# runs the daemon (and the CLI) with exactly the unit's capabilities.
tool systemd-analyze systemd
tool setpriv util-linux
# Discovery: victims in their own mount and PID namespaces (unshare, mount
# in TestContainerNamespaces); a real binary stripped of its symbols
# (objcopy, symbolizer TestLocateDocker, bench/attach's inspections).
# cgo victims are linked by gcc, which comes with the machine.
tool unshare util-linux
# nsenter: into a victim's PID namespace (pidns_test) and the booted
# systemd (nspawn_test).
tool nsenter util-linux
# A real externally linked third-party Go binary (symbolizer
# TestLocateDocker, integration TestDumpDocker): the docker CLI, which
# machines of this kind have; Debian's docker.io when one does not.
tool docker docker.io
tool mount mount
tool objcopy binutils
# integration/systemd_test.go boots a real systemd with systemd-nspawn, in
# a Debian bookworm root file system that mmdebstrap builds once, after
# apt (scripts/nspawn-rootfs.sh below; cached in .cache/nspawn).
tool systemd-nspawn systemd-container
tool mmdebstrap mmdebstrap
tool flock util-linux
# make install and uninstall, when systemd runs the host.
tool systemctl systemd
tool systemd-sysusers systemd
tool systemd-tmpfiles systemd
# make demo (scripts/demo.sh): Jaeger's query API and the self-test's JSON.
tool curl curl
tool jq jq
# Jaeger v2 all-in-one: the export tests and make demo.
build jaeger scripts/build-jaeger.sh
# promtool: exporter's TestPrometheusRules checks and unit-tests
# deploy/prometheus/mapsentry.rules.yml.
build promtool scripts/build-promtool.sh

# Builds go first: they take minutes on 2 cores and need only the Go
# toolchain, while apt mostly waits on the network and dpkg.
mkdir -p "$root/.cache/logs"
pids=()
if [[ "${MAPSENTRY_SKIP_BUILDS:-${MAPSENTRY_SKIP_JAEGER:-}}" != 1 ]]; then
	for b in "${builds[@]}"; do
		name="${b%%:*}"
		script="${b#*:}"
		"$root/$script" >"$root/.cache/logs/build-$name.log" 2>&1 &
		pids+=("$!:$name")
	done
fi

status=0
if ((${#need[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps: need root to install: ${need[*]}" >&2
		status=1
	else
		echo "deps: apt-get install ${need[*]}" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || status=1
	fi
fi

# The Go 1.27.3 toolchain for the newest victims, through the module proxy.
GOTOOLCHAIN=go1.27.3 go version >/dev/null || status=1

# The systemd test's root file system (~3 min the first time, then a stamp
# check): it needs mmdebstrap from apt, so it starts now, beside the builds.
if [[ $status -eq 0 && "${MAPSENTRY_SKIP_BUILDS:-}" != 1 ]]; then
	"$root/scripts/nspawn-rootfs.sh" >"$root/.cache/logs/build-nspawn-rootfs.log" 2>&1 &
	pids+=("$!:nspawn-rootfs")
fi

for p in "${pids[@]}"; do
	if ! wait "${p%%:*}"; then
		echo "deps: building ${p#*:} failed; its log, .cache/logs/build-${p#*:}.log, ends:" >&2
		tail -20 "$root/.cache/logs/build-${p#*:}.log" >&2
		status=1
	fi
done
if [[ $status -ne 0 ]]; then
	echo "deps: failed" >&2
	exit 1
fi
echo "deps: ok" >&2
