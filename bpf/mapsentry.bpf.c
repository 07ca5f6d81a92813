//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* mapsentry's kernel side: crash uprobes that freeze a Go program at the
 * runtime's fatal call, and the exec/exit tracepoints that feed discovery.
 * No policy lives here: which binaries get probes, and when a frozen process
 * is released, is decided in user space. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "mapsentry.h"
#include "pidns.h"

#define SIGSTOP 19

char __license[] SEC("license") = "Dual MIT/GPL";

/* Register file as the uprobe context has it. */
#if defined(__TARGET_ARCH_x86)
struct ms_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di,
		orig_ax, ip, cs, flags, sp, ss;
};
#define REG_G(r) ((r)->r14)   /* Go ABIInternal: current g */
#define REG_ARG0(r) ((r)->ax)
#define REG_ARG1(r) ((r)->bx)
#define REG_SP(r) ((r)->sp)
#elif defined(__TARGET_ARCH_arm64)
struct ms_regs {
	__u64 regs[31];
	__u64 sp, pc, pstate;
};
#define REG_G(r) ((r)->regs[28])
#define REG_ARG0(r) ((r)->regs[0])
#define REG_ARG1(r) ((r)->regs[1])
#define REG_SP(r) ((r)->sp)
#define REG_LR(r) ((r)->regs[30])
#else
#error "unsupported target arch"
#endif

/* CO-RE views of kernel structs: only the fields we read; libbpf-style
 * relocations against the running kernel's BTF fix the offsets at load. */
typedef struct {
	int counter;
} atomic_t;
struct signal_struct {
	atomic_t live;
} __attribute__((preserve_access_index));
struct task_struct {
	int exit_code;
	__u64 start_boottime;
	struct task_struct *group_leader;
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

/* Set by the daemon before load. */
volatile const __u32 freeze_enabled = 1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid in the daemon's PID namespace */
	__type(value, struct stop_state);
} stopped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* binary id */
	__type(value, struct bin_config);
} binaries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Keep the event type in BTF so bpf2go -type can generate it. */
const struct event *unused_event __attribute__((unused));
const struct stop_state *unused_stop_state __attribute__((unused));
const struct bin_config *unused_bin_config __attribute__((unused));

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1;
}

static __always_inline __u64 leader_start(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	return BPF_CORE_READ(leader, start_boottime);
}

/* The freeze protocol: SIGSTOP on every hit until user space marks the
 * process released. Thread-directed, so that every crashing thread stops at
 * its own fatal entry before it can print (process-directed bpf_send_signal
 * let a second thread print in 6 of 160 runs; see docs/freeze.md). */
static __always_inline int freeze(__u32 tgid, __u64 start, __u64 now)
{
	struct stop_state *st = bpf_map_lookup_elem(&stopped, &tgid);
	if (st && st->start_boottime == start && st->state == STOP_RELEASED)
		return 1;
	if (!freeze_enabled)
		return 1;
	if (!st || st->start_boottime != start) {
		struct stop_state n = {
			.state = STOP_FREEZING,
			.start_boottime = start,
			.first_ktime = now,
		};
		bpf_map_update_elem(&stopped, &tgid, &n, BPF_ANY);
	}
	return bpf_send_signal_thread(SIGSTOP);
}

static __always_inline int crash(struct pt_regs *ctx)
{
	struct ms_regs *r = (struct ms_regs *)ctx;
	__u32 tgid, tid;
	if (!current_ids(&tgid, &tid)) {
		/* Same binary, run outside the daemon's PID namespace: the
		 * daemon could neither capture nor resume it. */
		count(COUNTER_OTHER_NS);
		return 0;
	}
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 bin_id = cookie >> 32;
	__u64 now = bpf_ktime_get_ns();

	count(COUNTER_FATAL_HITS);
	/* Reserve first: if the event cannot be delivered, user space would
	 * never learn of the freeze, so a lost event must not freeze. */
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_RINGBUF_FULL);
		return 0;
	}
	e->type = EVENT_FATAL;
	e->pid = tgid;
	e->tid = tid;
	e->probe = cookie & 0xff;
	e->cookie = cookie;
	e->ktime = now;
	e->start_boottime = leader_start();
	e->exit_code = 0;

	__builtin_memset(e->regs, 0, sizeof(e->regs));
	__builtin_memcpy(e->regs, r, sizeof(*r));

	e->g = REG_G(r);
	e->goid = -1;
	e->goid_err = -1;
	struct bin_config *cfg = bpf_map_lookup_elem(&binaries, &bin_id);
	if (cfg && cfg->goid_off)
		e->goid_err = bpf_probe_read_user(&e->goid, sizeof(e->goid),
						  (void *)(e->g + cfg->goid_off));

	/* fatal/throw(s string): ptr, len in the first two argument registers. */
	e->msg_ptr = REG_ARG0(r);
	e->msg_len = REG_ARG1(r);
	__builtin_memset(e->msg, 0, sizeof(e->msg));
	if (e->probe != PROBE_FATALPANIC) {
		__u32 n = e->msg_len > MSG_LEN ? MSG_LEN : (__u32)e->msg_len;
		bpf_probe_read_user(e->msg, n & (2 * MSG_LEN - 1), (void *)e->msg_ptr);
	}

#if defined(__TARGET_ARCH_x86)
	e->ret_addr = 0;
	bpf_probe_read_user(&e->ret_addr, sizeof(e->ret_addr), (void *)REG_SP(r));
#else
	e->ret_addr = REG_LR(r);
#endif
	long n = bpf_get_stack(ctx, e->stack, sizeof(e->stack), BPF_F_USER_STACK);
	e->stack_bytes = n;

	e->sig_ret = freeze(e->pid, e->start_boottime, now);
	if (e->sig_ret < 0)
		count(COUNTER_SIGNAL_ERRORS);
	/* The process now waits for user space: wake the reader at once
	 * rather than when the ring buffer's adaptive notification fires. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* The same program twice: uprobe_multi links (Linux 6.6+) attach with
 * CAP_BPF and CAP_PERFMON alone and put all of a binary's crash functions
 * in one link; perf-event uprobes are the fallback for older kernels and
 * need CAP_SYS_ADMIN. */
SEC("uprobe.multi")
int uprobe_multi_crash(struct pt_regs *ctx)
{
	return crash(ctx);
}

SEC("uprobe")
int uprobe_crash(struct pt_regs *ctx)
{
	return crash(ctx);
}

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

/* sched_process_exec as a raw tracepoint (no tracefs needed):
 * args = (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm). */
SEC("raw_tracepoint/sched_process_exec")
int tp_exec(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid, tid;
	if (!current_ids(&tgid, &tid))
		return 0; /* not the daemon's to discover */
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_EXEC_LOST);
		return 0;
	}
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	__builtin_memset(e, 0, sizeof(*e));
	e->type = EVENT_EXEC;
	e->pid = tgid;
	e->tid = tid;
	e->ktime = bpf_ktime_get_ns();
	e->start_boottime = leader_start();
	bpf_probe_read_kernel_str(e->msg, sizeof(e->msg), BPF_CORE_READ(bprm, filename));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* sched_process_exit: report the exit status of processes we froze, once
 * the whole thread group is dead, and forget their stop state so a reused
 * tgid starts clean. Fields are read from the task with CO-RE: the
 * tracepoint's arguments changed across kernels (6.x added group_dead). */
SEC("raw_tracepoint/sched_process_exit")
int tp_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid, tid;
	if (!current_ids(&tgid, &tid))
		return 0;
	struct stop_state *st = bpf_map_lookup_elem(&stopped, &tgid);
	if (!st)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* other threads still alive */
	__u64 start = leader_start();
	if (st->start_boottime != start)
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		__builtin_memset(e, 0, sizeof(*e));
		e->type = EVENT_EXIT;
		e->pid = tgid;
		e->tid = tid;
		e->ktime = bpf_ktime_get_ns();
		e->start_boottime = start;
		e->exit_code = BPF_CORE_READ(task, exit_code);
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&stopped, &tgid);
	return 0;
}
