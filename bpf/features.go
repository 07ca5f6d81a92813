package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Feature is a kernel feature the BPF objects of this package use, and
// cilium/ebpf's probe for it (package features: each probe loads a tiny
// program or map once per process, needs CAP_BPF, and returns
// ebpf.ErrNotSupported when the kernel lacks the feature).
type Feature struct {
	Name string // as the daemon's start-up check is named
	// Lacking says what is missing (and since which Linux) and what stops
	// working without it.
	Lacking string
	// FreezeOnly: needed only when crashing processes are frozen.
	FreezeOnly bool
	// Optional: the daemon works without it, with a fallback.
	Optional bool
	Probe    func() error
}

// Features lists what mapsentry.bpf.c and mapops.bpf.c need from the
// kernel, in the order the daemon checks them.
func Features() []Feature {
	return []Feature{
		{Name: "program types", Lacking: "kprobe (uprobe) or raw_tracepoint BPF programs: nothing can be probed",
			Probe: func() error {
				return errors.Join(features.HaveProgramType(ebpf.Kprobe), features.HaveProgramType(ebpf.RawTracepoint))
			}},
		{Name: "ring buffer", Lacking: "BPF ring buffers (Linux 5.8+): events cannot reach the daemon",
			Probe: func() error { return features.HaveMapType(ebpf.RingBuf) }},
		{Name: "map types", Lacking: "hash, LRU hash or per-CPU array maps: the freeze state, binary table and counters",
			Probe: func() error {
				return errors.Join(features.HaveMapType(ebpf.Hash), features.HaveMapType(ebpf.LRUHash),
					features.HaveMapType(ebpf.PerCPUArray))
			}},
		{Name: "attach cookie", Lacking: "bpf_get_attach_cookie (Linux 5.15+): probes cannot tell which binary hit them",
			Probe: func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie) }},
		{Name: "send_signal_thread", FreezeOnly: true,
			Lacking: "bpf_send_signal_thread (Linux 5.5+): crashing threads cannot be frozen",
			Probe:   func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnSendSignalThread) }},
		{Name: "helpers", Lacking: "bpf_probe_read_user, bpf_probe_read_kernel_str, bpf_get_current_task or bpf_get_stack " +
			"(Linux 5.5+): the crash programs cannot read the crashing goroutine",
			Probe: func() error {
				var errs []error
				for _, h := range []asm.BuiltinFunc{asm.FnProbeReadUser, asm.FnProbeReadKernelStr, asm.FnGetCurrentTask, asm.FnGetStack} {
					if err := features.HaveProgramHelper(ebpf.Kprobe, h); err != nil {
						errs = append(errs, fmt.Errorf("%v: %w", h, err))
					}
				}
				return errors.Join(errs...)
			}},
		{Name: "uprobe_multi", Optional: true,
			Lacking: "uprobe_multi links (Linux 6.6+): probes fall back to perf-event uprobes, which need CAP_SYS_ADMIN (not in the unit)",
			Probe:   features.HaveBPFLinkUprobeMulti},
	}
}

// HaveUprobeMulti says whether the kernel has uprobe_multi links (Linux
// 6.6+), which attach every crash function of a binary with one link and
// need only CAP_BPF and CAP_PERFMON. Without them, the uprobe_multi
// programs are not loaded and their perf-event twins do the work.
func HaveUprobeMulti() error {
	if err := features.HaveBPFLinkUprobeMulti(); err != nil {
		return fmt.Errorf("no uprobe_multi links (Linux 6.6+): %w", err)
	}
	return nil
}
