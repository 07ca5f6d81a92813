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
struct pid;
struct signal_struct {
	atomic_t live;
	/* PIDTYPE_PID, PIDTYPE_TGID, PIDTYPE_PGID, PIDTYPE_SID since 4.19 */
	struct pid *pids[4];
} __attribute__((preserve_access_index));
struct task_struct {
	int exit_code;
	unsigned int ptrace;
	__u64 start_boottime;
	struct task_struct *group_leader;
	struct task_struct *real_parent;
	struct signal_struct *signal;
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));
struct mnt_namespace {
	struct ns_common___ms ns;
} __attribute__((preserve_access_index));
struct nsproxy {
	struct mnt_namespace *mnt_ns;
} __attribute__((preserve_access_index));
#define PIDTYPE_PGID 2

/* Set by the daemon before load. */
volatile const __u32 freeze_enabled = 1;

/* Crash (EVENT_FATAL) and exit (EVENT_EXIT) events: nothing else writes
 * here, so the host's exec traffic never takes their room. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Exec events (struct exec_event), for discovery. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} exec_events SEC(".maps");

/* Files the daemon has settled (probed, not Go, out of scope), as the
 * kernel names them: their execs send no event. Written by the daemon
 * only, which deletes an entry when it forgets the file (evicted,
 * detached, rewritten); the LRU bound only ever costs an extra event. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct exe_key);
	__type(value, __u32);
} known_exes SEC(".maps");

/* Mount namespaces the exec gate watches (nsfs inode). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} known_mntns SEC(".maps");

/* Filesystems the exec gate covers (superblock device, kernel encoding). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} gated_devs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_ctl);
} execctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid in the daemon's PID namespace */
	__type(value, struct stop_state);
} stopped SEC(".maps");

/* stop_gen[0] counts the stop states created, each after its insertion
 * into stopped. The daemon maps it (BPF_F_MMAPABLE) and reads it before
 * listing stopped: a count unchanged since a listing that found nothing
 * means there is still nothing, learnt without a system call (an idle
 * daemon looks every second; listing an empty LRU hash walks every
 * bucket). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} stop_gen SEC(".maps");

/* The daemon's decisions (HELD, RELEASED), keyed by tgid: only the daemon
 * writes here, only the probe writes stopped. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, struct verdict);
} verdicts SEC(".maps");

/* hold_ctl[0]: the daemon's heartbeat and the hold's bounds. Mapped by
 * the daemon, whose heartbeat is then a store, not a system call. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hold_ctl);
} holdctl SEC(".maps");

/* waiters[0]: threads waiting inside crash probes right now. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} waiters SEC(".maps");

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
const struct exec_event *unused_exec_event __attribute__((unused));
const struct exec_ctl *unused_exec_ctl __attribute__((unused));
const struct stop_state *unused_stop_state __attribute__((unused));
const struct bin_config *unused_bin_config __attribute__((unused));
const struct verdict *unused_verdict __attribute__((unused));
const struct hold_ctl *unused_hold_ctl __attribute__((unused));

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

/* What the daemon decided about tgid (STOP_HELD, STOP_RELEASED), or 0. */
static __always_inline __u64 verdict_of(__u32 tgid, __u64 start)
{
	struct verdict *v = bpf_map_lookup_elem(&verdicts, &tgid);
	if (v && v->start_boottime == start)
		return v->state;
	return 0;
}

/* Whether the parent of the crashing process may observe a stop: a
 * job-control shell puts each job in a process group of its own and waits
 * with WUNTRACED, so it prints "Stopped" and sets $? to 147. A parent in
 * the same process group (exec.Cmd, make, sh -c, CI runners) does not. */
static __always_inline int parent_sees_stop(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct pid *own = BPF_CORE_READ(leader, signal, pids[PIDTYPE_PGID]);
	struct pid *parents = BPF_CORE_READ(leader, real_parent, signal, pids[PIDTYPE_PGID]);
	return own != parents;
}

static __always_inline int take_waiter(struct hold_ctl *ctl)
{
	__u32 zero = 0;
	__s64 *w = bpf_map_lookup_elem(&waiters, &zero);
	if (!w)
		return 0;
	if (__sync_fetch_and_add(w, 1) >= (__s64)ctl->max_waiters) {
		__sync_fetch_and_add(w, -1);
		return 0;
	}
	return 1;
}

static __always_inline void put_waiter(void)
{
	__u32 zero = 0;
	__s64 *w = bpf_map_lookup_elem(&waiters, &zero);
	if (w)
		__sync_fetch_and_add(w, -1);
}

static __always_inline __u32 sigstop(struct stop_state *st, struct event *e)
{
	__sync_fetch_and_or(&st->flags, STOP_F_SIGSTOP_SENT);
	count(COUNTER_SIGSTOPS);
	e->sig_ret = bpf_send_signal_thread(SIGSTOP);
	return ACT_SIGSTOP;
}

/* The fallback when a thread cannot wait in the probe: SIGSTOP if the
 * parent cannot see it, else nothing (the daemon seizes the process as
 * soon as it can, and the report says the crashing thread ran on). */
static __always_inline __u32 no_wait(struct stop_state *st, struct event *e, __u32 why)
{
	if (!parent_sees_stop()) {
		st->state = STOP_SIGSTOP;
		return sigstop(st, e);
	}
	__sync_fetch_and_or(&st->flags, STOP_F_PARENT_SEES | why);
	count(COUNTER_NOT_HELD);
	return ACT_NO_WAITER;
}

/* decide is the freeze protocol's kernel half for one probe hit: the hold
 * this thread gets (enum hold_action). The first hit of a process creates
 * its stop state; later hits follow it. See docs/freeze.md. */
static __always_inline __u32 decide(struct event *e, int can_wait, struct stop_state **out, int *slot)
{
	__u32 tgid = e->pid, zero = 0;
	__u64 start = e->start_boottime;
	__u64 v = verdict_of(tgid, start);
	struct stop_state *st = bpf_map_lookup_elem(&stopped, &tgid);

	*out = 0;
	if (st && st->start_boottime != start)
		st = 0; /* a reused tgid: start clean */
	if (v == STOP_RELEASED)
		return ACT_NONE;
	if (!freeze_enabled)
		return ACT_NONE;
	struct hold_ctl *ctl = bpf_map_lookup_elem(&holdctl, &zero);
	if (!ctl || e->ktime > ctl->live_until) {
		/* A daemon that stopped heart-beating (stopping, stuck, gone)
		 * would never release a hold: fail open. */
		count(COUNTER_NO_DAEMON);
		return ACT_NO_DAEMON;
	}
	if (!st) {
		struct stop_state n = {
			.start_boottime = start,
			.first_ktime = e->ktime,
		};
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		if (BPF_CORE_READ(task, ptrace)) {
			n.state = STOP_UNHELD;
			n.flags = STOP_F_TRACED;
		} else if (ctl->mode == HOLD_SIGSTOP || !can_wait) {
			n.state = STOP_SIGSTOP;
		} else {
			n.state = STOP_WAITING;
		}
		/* Two threads may race here: the first creates, both follow. */
		bpf_map_update_elem(&stopped, &tgid, &n, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stopped, &tgid);
		if (!st || st->start_boottime != start)
			bpf_map_update_elem(&stopped, &tgid, &n, BPF_ANY);
		st = bpf_map_lookup_elem(&stopped, &tgid);
		if (!st)
			return ACT_NONE;
		__u64 *gen = bpf_map_lookup_elem(&stop_gen, &zero);
		if (gen)
			__sync_fetch_and_add(gen, 1);
	}
	*out = st;
	e->seq = __sync_fetch_and_add(&st->hits, 1) + 1;
	if (v == STOP_HELD)
		return ACT_HELD;
	switch (st->state) {
	case STOP_SIGSTOP:
		return sigstop(st, e);
	case STOP_WAITING:
		/* One thread per process decides about a waiter slot: the
		 * first to set the claim. Every other crashing thread waits
		 * too, without a slot — running on, it would end the process
		 * the first waits in. The claim is one atomic step: two
		 * threads crashing at once must not both ask for a slot (the
		 * loser, finding the slot taken by its own sibling, would run
		 * on). Bounded by the threads of the processes that claimed;
		 * a claim that found no slot ends its siblings' waits
		 * (wait_step). */
		if (__sync_fetch_and_or(&st->flags, STOP_F_CLAIM) & STOP_F_CLAIM)
			return ACT_WAIT;
		if (take_waiter(ctl)) {
			__sync_fetch_and_or(&st->flags, STOP_F_WAITER);
			*slot = 1;
			return ACT_WAIT;
		}
		return no_wait(st, e, STOP_F_NO_WAITER);
	}
	if (st->flags & STOP_F_TRACED) {
		count(COUNTER_NOT_HELD);
		return ACT_TRACED;
	}
	return ACT_UNHELD;
}

struct wait_ctx {
	__u32 tgid;
	__u32 done; /* 1 verdict, 2 bound, 3 fatal signal, 4 no slot */
	__u64 start;
	__u64 until;
	__u64 sp;
	struct task_struct *task;
};

static long wait_step(__u64 i, struct wait_ctx *c)
{
	__u64 v = verdict_of(c->tgid, c->start);
	if (v == STOP_HELD || v == STOP_RELEASED) {
		c->done = 1;
		return 1;
	}
	/* The thread that claimed this process's slot found none: it runs
	 * on (or stopped the process with SIGSTOP); waiting on would hold
	 * nothing. */
	struct stop_state *st = bpf_map_lookup_elem(&stopped, &c->tgid);
	if (st && st->start_boottime == c->start &&
	    (st->state != STOP_WAITING || (st->flags & STOP_F_NO_WAITER))) {
		c->done = 4;
		return 1;
	}
	if (bpf_ktime_get_ns() > c->until) {
		c->done = 2;
		return 1;
	}
	/* The yield: a one-byte read of our own stack through the remote-VM
	 * path, whose page walk calls cond_resched(). With preempt=none a
	 * busy loop in the kernel would own its CPU until it leaves; this one
	 * gives the CPU to the daemon whenever the scheduler wants it. It
	 * fails when a fatal signal is pending: then stop waiting. */
	__u8 b;
	if (bpf_copy_from_user_task(&b, 1, (void *)c->sp, c->task, 0) != 0) {
		c->done = 3;
		return 1;
	}
	return 0;
}

/* hold_wait keeps the crashing thread inside the probe, before it runs a
 * single further instruction, until the daemon has seized every thread
 * (then the thread stops in ptrace-stop on its way out), released it, or
 * the bound passes. Nothing here is visible to the parent. A daemon that
 * stops or dies leaves the waiters to the bound: they run on, as without
 * mapsentry — never a SIGSTOP nobody would answer. */
static __always_inline void hold_wait(struct pt_regs *ctx, __u32 tgid, __u64 start, __u64 since,
				      struct stop_state *st, int slot)
{
	__u32 zero = 0;
	struct hold_ctl *ctl = bpf_map_lookup_elem(&holdctl, &zero);
	struct wait_ctx c = {
		.tgid = tgid,
		.start = start,
		.until = since + (ctl ? ctl->wait_ns : 0),
		.sp = REG_SP((struct ms_regs *)ctx),
		.task = bpf_get_current_task_btf(),
	};
	count(COUNTER_WAITS);
	bpf_loop(1 << 23, wait_step, &c, 0);
	if (slot)
		put_waiter();
	if (c.done == 2) {
		count(COUNTER_WAIT_TIMEOUTS);
		__sync_fetch_and_or(&st->flags, STOP_F_WAIT_TIMEOUT);
	}
}

static __always_inline int crash(struct pt_regs *ctx, int can_wait)
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
	e->seq = 0;

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

	struct stop_state *st;
	int slot = 0;
	e->sig_ret = 1;
	e->action = decide(e, can_wait, &st, &slot);
	if (e->sig_ret < 0)
		count(COUNTER_SIGNAL_ERRORS);
	__u32 action = e->action;
	__u64 start = e->start_boottime;
	/* The process now waits for user space: wake the reader at once
	 * rather than when the ring buffer's adaptive notification fires. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	if (action == ACT_WAIT && st)
		hold_wait(ctx, tgid, start, now, st, slot);
	return 0;
}

/* Four programs, one body. The sleepable ones can wait inside the probe
 * (hold_wait yields the CPU); the others, for kernels that refuse
 * sleepable uprobes, can only SIGSTOP. uprobe_multi links (Linux 6.6+)
 * attach with CAP_BPF and CAP_PERFMON alone and put all of a binary's
 * crash functions in one link; perf-event uprobes are the fallback for
 * older kernels and need CAP_SYS_ADMIN. */
SEC("uprobe.multi.s")
int uprobe_multi_crash(struct pt_regs *ctx)
{
	return crash(ctx, 1);
}

SEC("uprobe.s")
int uprobe_crash(struct pt_regs *ctx)
{
	return crash(ctx, 1);
}

SEC("uprobe.multi")
int uprobe_multi_crash_nowait(struct pt_regs *ctx)
{
	return crash(ctx, 0);
}

SEC("uprobe")
int uprobe_crash_nowait(struct pt_regs *ctx)
{
	return crash(ctx, 0);
}

struct super_block {
	__u32 s_dev;
} __attribute__((preserve_access_index));
/* struct inode's timestamps moved three times: timespec64 i_mtime and
 * i_ctime; then __i_ctime (6.6) and __i_mtime (6.7); then second and
 * nanosecond fields (6.11). One view per layout, picked at load. */
struct timespec64___ms {
	__s64 tv_sec;
	long tv_nsec;
} __attribute__((preserve_access_index));
struct inode {
	struct super_block *i_sb;
	unsigned long i_ino;
	long long i_size;
} __attribute__((preserve_access_index));
struct inode___v611 {
	__s64 i_mtime_sec;
	__s64 i_ctime_sec;
	__u32 i_mtime_nsec;
	__u32 i_ctime_nsec;
} __attribute__((preserve_access_index));
struct inode___v66 {
	struct timespec64___ms __i_mtime;
	struct timespec64___ms __i_ctime;
} __attribute__((preserve_access_index));
struct inode___v0 {
	struct timespec64___ms i_mtime;
	struct timespec64___ms i_ctime;
} __attribute__((preserve_access_index));
struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));
struct linux_binprm {
	struct file *file;
	const char *filename;
} __attribute__((preserve_access_index));

#define NS 1000000000LL
#define CTIME_NSEC_MASK ((1U << 30) - 1) /* nsec < 2^30; the bits above are flags */

/* exe_of fills k with the executable's identity and returns 1, or 0 when
 * this kernel's inode has none of the timestamp layouts (then nothing is
 * ever filtered: a rewrite must not go unnoticed). */
static __always_inline int exe_of(struct linux_binprm *bprm, struct exe_key *k)
{
	struct inode *in = BPF_CORE_READ(bprm, file, f_inode);
	if (!in)
		return 0;
	k->dev = BPF_CORE_READ(in, i_sb, s_dev);
	k->ino = BPF_CORE_READ(in, i_ino);
	k->size = BPF_CORE_READ(in, i_size);
	struct inode___v611 *v611 = (void *)in;
	struct inode___v66 *v66 = (void *)in;
	struct inode___v0 *v0 = (void *)in;
	if (bpf_core_field_exists(v611->i_mtime_sec)) {
		k->mtime_ns = BPF_CORE_READ(v611, i_mtime_sec) * NS + BPF_CORE_READ(v611, i_mtime_nsec);
	} else if (bpf_core_field_exists(v66->__i_mtime)) {
		k->mtime_ns = BPF_CORE_READ(v66, __i_mtime.tv_sec) * NS + BPF_CORE_READ(v66, __i_mtime.tv_nsec);
	} else if (bpf_core_field_exists(v0->i_mtime)) {
		k->mtime_ns = BPF_CORE_READ(v0, i_mtime.tv_sec) * NS + BPF_CORE_READ(v0, i_mtime.tv_nsec);
	} else {
		return 0;
	}
	if (bpf_core_field_exists(v611->i_ctime_sec)) {
		/* Multigrain timestamps (6.13+) keep a flag (I_CTIME_QUERIED,
		 * bit 31) in the nanoseconds; stat masks it. */
		k->ctime_ns = BPF_CORE_READ(v611, i_ctime_sec) * NS + (BPF_CORE_READ(v611, i_ctime_nsec) & CTIME_NSEC_MASK);
	} else if (bpf_core_field_exists(v66->__i_ctime)) {
		k->ctime_ns = BPF_CORE_READ(v66, __i_ctime.tv_sec) * NS + BPF_CORE_READ(v66, __i_ctime.tv_nsec);
	} else if (bpf_core_field_exists(v0->i_ctime)) {
		k->ctime_ns = BPF_CORE_READ(v0, i_ctime.tv_sec) * NS + BPF_CORE_READ(v0, i_ctime.tv_nsec);
	} else {
		return 0;
	}
	return 1;
}

/* sched_process_exec as a raw tracepoint (no tracefs needed):
 * args = (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm).
 *
 * An exec of a file the daemon has settled, in a mount namespace it
 * watches, sends nothing: on a busy host almost every exec is one, and
 * each event costs the daemon a wake-up. What is sent wakes the reader
 * only when it is urgent: a new file the exec gate did not hold (its
 * probes go in from this event), or a new mount namespace (the gate marks
 * its mounts). A new file the gate held already has its probes; its event
 * only tells which process runs it, and waits for the reader's next turn. */
SEC("raw_tracepoint/sched_process_exec")
int tp_exec(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid, tid, zero = 0;
	if (!current_ids(&tgid, &tid))
		return 0; /* not the daemon's to discover */
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	struct exe_key k = {};
	__u32 flags = 0;
	if (exe_of(bprm, &k)) {
		flags |= EXEC_F_KEYED;
		if (bpf_map_lookup_elem(&known_exes, &k))
			flags |= EXEC_F_KNOWN;
	}
	struct exec_ctl *ctl = bpf_map_lookup_elem(&execctl, &zero);
	int gate = ctl && (ctl->flags & EXEC_CTL_GATE);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	int new_ns = gate && !bpf_map_lookup_elem(&known_mntns, &mntns);
	if ((flags & EXEC_F_KNOWN) && !new_ns) {
		count(COUNTER_EXEC_KNOWN);
		return 0;
	}
	__u32 dev = k.dev;
	if (gate && (flags & EXEC_F_KEYED) && bpf_map_lookup_elem(&gated_devs, &dev))
		flags |= EXEC_F_GATED;

	struct exec_event *e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_EXEC_LOST);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = EVENT_EXEC;
	e->pid = tgid;
	e->tid = tid;
	e->flags = flags;
	e->ktime = bpf_ktime_get_ns();
	e->start_boottime = leader_start();
	e->mntns = mntns;
	e->exe = k;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	__u64 wake = 0; /* urgent: wake the reader if it had read everything */
	__u64 avail = bpf_ringbuf_query(&exec_events, BPF_RB_AVAIL_DATA);
	if ((flags & EXEC_F_GATED) && !new_ns) {
		/* Not urgent: the reader's next turn (at most a second), or
		 * now if the ring is filling up. */
		wake = BPF_RB_NO_WAKEUP;
		if (avail > bpf_ringbuf_query(&exec_events, BPF_RB_RING_SIZE) / 8)
			wake = BPF_RB_FORCE_WAKEUP;
	} else if (avail > sizeof(*e) + 8) {
		/* Records before this one may have been sent without a wake-up:
		 * the adaptive wake-up fires only for a reader that has read
		 * everything, so an urgent event behind them must force it. */
		wake = BPF_RB_FORCE_WAKEUP;
	}
	bpf_ringbuf_submit(e, wake);
	return 0;
}

/* sched_process_exit: report the exit status of processes we froze, once
 * the whole thread group is dead, and forget their stop state so a reused
 * tgid starts clean. Every other exit sends nothing. Fields are read from the task with CO-RE: the
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
	} else {
		count(COUNTER_EXIT_LOST);
	}
	bpf_map_delete_elem(&stopped, &tgid);
	bpf_map_delete_elem(&verdicts, &tgid);
	return 0;
}
