// Package bpf owns mapsentry's eBPF programs (mapsentry.bpf.c: crash
// probes and discovery tracepoints; mapops.bpf.c: the opt-in map-op flight
// recorder), their
// bpf2go-generated Go bindings and objects (committed, so building needs no
// clang), and a thin loader: load, attach the tracepoints, hand out the crash
// uprobe program, and read/write the maps the freeze protocol uses. Every
// PID the programs report or key a map by is numbered in the daemon's own
// PID namespace, and processes outside it are ignored (pidns.h). Policy —
// which binaries to probe, when to release a frozen process — lives in
// probes/ and daemon/.
package bpf

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event -type stop_state -type bin_config -type verdict -type hold_ctl mapsentry mapsentry.bpf.c -- -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type mapop -type mapop_wkey -type mapop_writers mapops mapops.bpf.c -- -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu
