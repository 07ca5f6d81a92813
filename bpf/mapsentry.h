/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Shared between the BPF programs and, through bpf2go -type, the Go loader.
 * Structs crossing the ring buffer are naturally aligned with explicit
 * padding; bpf/layout_test.go checks the Go sizes. */
#ifndef MAPSENTRY_H
#define MAPSENTRY_H

#define MSG_LEN 128
#define STACK_DEPTH 64
#define NREGS 34

enum event_type {
	EVENT_FATAL = 1, /* a crash probe hit */
	EVENT_EXEC = 2,  /* sched_process_exec: discovery */
	EVENT_EXIT = 3,  /* a frozen (or released) process exited */
};

/* Cookie of a crash uprobe: binary id in the high 32 bits, the probed
 * function's kind in the low 8. */
enum probe_kind {
	PROBE_RUNTIME_FATAL = 1,
	PROBE_RUNTIME_THROW = 2,
	PROBE_MAPS_FATAL = 3,
	PROBE_FATALPANIC = 4,
};

/* stop_state.state */
enum stop_phase {
	STOP_FREEZING = 1, /* SIGSTOP sent on every hit */
	STOP_RELEASED = 2, /* daemon captured and resumed: let it die */
};

struct stop_state {
	__u64 state;
	__u64 start_boottime; /* identity: a reused tgid has another start */
	__u64 first_ktime;
};

struct bin_config {
	__u32 goid_off; /* offset of goid in runtime.g; 0 = unknown */
	__u32 flags;
};

enum counter {
	COUNTER_RINGBUF_FULL = 0, /* event lost; the thread was NOT frozen */
	COUNTER_FATAL_HITS = 1,
	COUNTER_SIGNAL_ERRORS = 2,
	COUNTER_EXEC_LOST = 3,
	COUNTER_OTHER_NS = 4, /* crash hit outside the daemon's PID namespace: ignored */
	COUNTER_MAX = 5,
};

struct event {
	__u32 type;
	__u32 pid; /* tgid, as the daemon's PID namespace numbers it (pidns.h) */
	__u32 tid;
	__u32 probe; /* enum probe_kind */
	__u64 cookie;
	__u64 ktime;
	__u64 start_boottime; /* of the thread group leader, ns */
	__u64 g;
	__s64 goid;
	__u64 msg_ptr;
	__u64 msg_len;
	__u64 ret_addr; /* return address at entry: the caller */
	__s32 sig_ret;  /* bpf_send_signal_thread result; 1 = not sent (released) */
	__s32 goid_err;
	__s32 stack_bytes;
	__s32 exit_code; /* EVENT_EXIT: task->exit_code */
	__u64 regs[NREGS]; /* struct pt_regs (amd64) / user_pt_regs (arm64) */
	__u8 msg[MSG_LEN]; /* fatal message prefix, or exec filename */
	__u64 stack[STACK_DEPTH];
};

#endif
