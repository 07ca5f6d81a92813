//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* The opt-in map-op flight recorder: one uprobe program for the runtime's
 * map functions (mapassign, mapdelete and variants, mapclear, mapaccess1 and 2 (all variants), iterator
 * start/next). A read or iteration replaces the thread's last map
 * operation; a write goes to a small ring of the last writers of that
 * (pid, map). At a crash user space reads both. Work per hit is one LRU
 * lookup and an in-place write (capture-facts §5: the hit itself costs ~0.7 us on an
 * emulated instruction; the body must stay small next to it). Which
 * function, which binary and where the map is come from the cookie. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "mapops.h"
#include "pidns.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#if defined(__TARGET_ARCH_x86)
struct mo_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di,
		orig_ax, ip, cs, flags, sp, ss;
};
#define MO_G(r) ((r)->r14)
#define MO_ARG0(r) ((r)->ax)
#define MO_ARG1(r) ((r)->bx)
#elif defined(__TARGET_ARCH_arm64)
struct mo_regs {
	__u64 regs[31];
	__u64 sp, pc, pstate;
};
#define MO_G(r) ((r)->regs[28])
#define MO_ARG0(r) ((r)->regs[0])
#define MO_ARG1(r) ((r)->regs[1])
#else
#error "unsupported target arch"
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct mapop);
} mapop_threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct mapop_wkey);
	__type(value, struct mapop_writers);
} mapop_writer_rings SEC(".maps");

const struct mapop *unused_mapop __attribute__((unused));
const struct mapop_wkey *unused_mapop_wkey __attribute__((unused));
const struct mapop_writers *unused_mapop_writers __attribute__((unused));

static __always_inline void fill(struct mapop *o, __u64 now, __u64 g, __u64 map, __u64 caller,
				 __u64 caller2, __u64 pid_tgid, __u32 op, __u32 bin)
{
	o->ktime = now;
	o->g = g;
	o->map = map;
	o->caller = caller;
	o->caller2 = caller2;
	o->pid = pid_tgid >> 32;
	o->tid = (__u32)pid_tgid;
	o->op = op;
	o->bin = bin;
}

static __always_inline int mapop(struct pt_regs *ctx)
{
	struct mo_regs *r = (struct mo_regs *)ctx;
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 op = cookie & 0xff;
	__u32 conv = (cookie >> 8) & 0xff;
	__u32 bin = cookie >> 32;
	__u64 map = 0;

	switch (conv & MAPOP_CONV_MASK) {
	case MAPOP_MAP_ARG1:
		map = MO_ARG1(r);
		break;
	case MAPOP_MAP_ARG0:
		map = MO_ARG0(r);
		break;
	case MAPOP_MAP_ITER24:
		bpf_probe_read_user(&map, sizeof(map), (void *)(MO_ARG0(r) + 24));
		break;
	}
	if (!map)
		return 0; /* nil map: reads of it never race */

	/* The g, not the goid: reading g.goid here would be a second user
	 * memory read per hit (~70 ns, bench/mapops); user space reads it from
	 * the frozen process at the crash. */
	__u64 g = MO_G(r);
	/* The probe sits past the stack check and before the frame is built
	 * (PUSH RBP, or the JBE when the frame is built with SUB): the return
	 * address is at [SP], and BP is still the caller's frame pointer. */
	__u64 caller = 0, caller2 = 0;
#if defined(__TARGET_ARCH_x86)
	bpf_probe_read_user(&caller, sizeof(caller), (void *)r->sp);
	if (conv & MAPOP_CALLER2)
		bpf_probe_read_user(&caller2, sizeof(caller2), (void *)(r->bp + 8));
#else
	caller = r->regs[30];
#endif
	/* Keys and records by the daemon's PIDs; a thread outside its PID
	 * namespace is not recorded (pidns.h; free on the host). */
	__u32 tgid, tid;
	if (!current_ids(&tgid, &tid))
		return 0;
	__u64 pid_tgid = (__u64)tgid << 32 | tid;
	__u64 now = bpf_ktime_get_ns();

	/* Reads and iterations: the thread's last op. Writes: the map's ring
	 * only (a crashing writer's own record is found there by tid); doing
	 * both costs ~100 ns more per write (bench/mapops). Lookup and write
	 * in place; insert only when missing (a BPF_ANY update on every hit
	 * costs ~3x more, capture-facts §5). */
	if (op > MAPOP_CLEAR) {
		struct mapop *t = bpf_map_lookup_elem(&mapop_threads, &tid);
		if (t) {
			fill(t, now, g, map, caller, caller2, pid_tgid, op, bin);
		} else {
			struct mapop n = {};
			fill(&n, now, g, map, caller, caller2, pid_tgid, op, bin);
			bpf_map_update_elem(&mapop_threads, &tid, &n, BPF_NOEXIST);
		}
		return 0;
	}

	struct mapop_wkey k = {.pid = pid_tgid >> 32, .map = map};
	struct mapop_writers *w = bpf_map_lookup_elem(&mapop_writer_rings, &k);
	if (!w) {
		static const struct mapop_writers zero = {};
		bpf_map_update_elem(&mapop_writer_rings, &k, &zero, BPF_NOEXIST);
		w = bpf_map_lookup_elem(&mapop_writer_rings, &k);
		if (!w)
			return 0;
	}
	/* The last write of each of the last MAPOP_WRITERS writer goroutines
	 * (by g: goroutines move between threads, and several share one): a
	 * goroutine rewrites its own slot, a new one takes the next (racing
	 * writers each get their own). A ring of the last writes would hold
	 * only the busiest writer. */
	__u32 slot = MAPOP_WRITERS;
#pragma unroll
	for (__u32 i = 0; i < MAPOP_WRITERS; i++) {
		if (w->w[i].g == g) {
			slot = i;
			break;
		}
	}
	if (slot >= MAPOP_WRITERS)
		slot = __sync_fetch_and_add(&w->next, 1) % MAPOP_WRITERS;
	fill(&w->w[slot], now, g, map, caller, caller2, pid_tgid, op, bin);
	return 0;
}

/* The same program twice, as for the crash probes: a uprobe_multi link
 * (Linux 6.6+) puts every map function of a binary in one link and needs
 * only CAP_BPF and CAP_PERFMON; perf-event uprobes are the fallback for
 * older kernels and need CAP_SYS_ADMIN. */
SEC("uprobe.multi")
int uprobe_multi_mapop(struct pt_regs *ctx)
{
	return mapop(ctx);
}

SEC("uprobe")
int uprobe_mapop(struct pt_regs *ctx)
{
	return mapop(ctx);
}

/* The kernel's floor for the benchmarks: an empty program at the same
 * address measures what a uprobe hit costs with no work at all. */
SEC("uprobe.multi")
int uprobe_multi_mapop_empty(struct pt_regs *ctx)
{
	return 0;
}

SEC("uprobe")
int uprobe_mapop_empty(struct pt_regs *ctx)
{
	return 0;
}
