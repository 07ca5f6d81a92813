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
	EVENT_EXEC = 2,  /* sched_process_exec: discovery (struct exec_event,
			  * on the exec ring) */
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

/* stop_state.state: what the crash probe does with a process's threads.
 * Written by the probe only; the daemon's decisions arrive through the
 * verdicts map, so that neither side overwrites the other's fields. */
enum stop_phase {
	STOP_SIGSTOP = 1,  /* SIGSTOP on every hit (freeze.hold=sigstop, or the
			    * fallback when the parent cannot see a stop) */
	STOP_RELEASED = 2, /* (verdict) the daemon let it go: let it die */
	STOP_WAITING = 3,  /* crashing threads wait inside the probe until the
			    * daemon has seized every thread (ptrace) */
	STOP_HELD = 4,     /* (verdict) every thread seized and interrupted:
			    * a thread leaving the probe stops at once */
	STOP_UNHELD = 5,   /* no hold possible: the threads run on */
};

/* stop_state.flags */
enum stop_flag {
	STOP_F_SIGSTOP_SENT = 1,  /* a SIGSTOP was sent: the daemon must SIGCONT */
	STOP_F_PARENT_SEES = 2,   /* the parent may observe a stop (job control) */
	STOP_F_WAIT_TIMEOUT = 4,  /* a thread gave up waiting in the probe */
	STOP_F_TRACED = 8,        /* already traced (a debugger): no hold */
	STOP_F_NO_WAITER = 16,    /* too many threads waiting in probes */
	STOP_F_WAITER = 32,       /* a thread of it waits in a waiter slot */
	STOP_F_CLAIM = 64,        /* a thread of it took (or is taking) the
				   * decision about the slot: the others wait */
};

struct stop_state {
	__u64 state;
	__u64 start_boottime; /* identity: a reused tgid has another start */
	__u64 first_ktime;
	__u32 hits;  /* crash probe hits (events submitted) */
	__u32 flags; /* enum stop_flag */
};

/* The daemon's decision about one process (verdicts map). */
struct verdict {
	__u64 state; /* STOP_HELD or STOP_RELEASED */
	__u64 start_boottime;
};

/* hold_ctl[0], written by the daemon only. */
struct hold_ctl {
	__u64 live_until;  /* ktime: no new hold after it (heartbeat; 0 = stopping) */
	__u64 wait_ns;     /* bound of one thread's wait inside the probe */
	__u32 max_waiters; /* threads waiting inside probes at once */
	__u32 mode;        /* enum hold_mode */
};

enum hold_mode {
	HOLD_WAIT = 0,    /* wait in the probe, then ptrace (invisible) */
	HOLD_SIGSTOP = 1, /* SIGSTOP at the probe */
};

/* event.action: what the probe did with this thread. */
enum hold_action {
	ACT_NONE = 0,       /* nothing (released, freeze off) */
	ACT_WAIT = 1,       /* waits inside the probe for the daemon */
	ACT_SIGSTOP = 2,    /* sent itself SIGSTOP */
	ACT_HELD = 3,       /* process already seized: stops on its way out */
	ACT_NO_DAEMON = 4,  /* daemon not heart-beating: runs on */
	ACT_TRACED = 5,     /* traced by someone else: runs on */
	ACT_NO_WAITER = 6,  /* no waiter slot and the parent may see a stop: runs on */
	ACT_UNHELD = 7,     /* the process is not held: runs on */
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
	COUNTER_WAITS = 5,         /* threads that waited inside the probe */
	COUNTER_WAIT_TIMEOUTS = 6, /* ... and gave up: the daemon was too slow */
	COUNTER_SIGSTOPS = 7,      /* SIGSTOPs sent */
	COUNTER_NO_DAEMON = 8,     /* crashes not held: daemon not heart-beating */
	COUNTER_NOT_HELD = 9,      /* crashes not held: traced, or no waiter slot */
	COUNTER_EXIT_LOST = 10,    /* exit event of a crashed process lost (crash ring full) */
	COUNTER_EXEC_KNOWN = 11,   /* execs of a file the daemon knows: no event */
	COUNTER_MAX = 12,
};

/* An executable as the kernel sees it at exec: its superblock's device
 * (kernel encoding, MAJOR << 20 | MINOR), inode, and contents generation
 * (the daemon's FileGen: mtime, ctime, size). The daemon learns it from an
 * exec event and puts it in known_exes once it has settled the file
 * (probed, not Go, out of scope); a rewrite changes the generation, and
 * the next exec is an event again. */
struct exe_key {
	__u64 dev;
	__u64 ino;
	__s64 mtime_ns;
	__s64 ctime_ns;
	__s64 size;
};

/* exec_event.flags */
enum exec_flag {
	EXEC_F_KEYED = 1,     /* exe is set (this kernel's inode has the fields) */
	EXEC_F_KNOWN = 2,     /* exe is known: sent for its new mount namespace */
	EXEC_F_GATED = 4,     /* exe is on a filesystem the exec gate covers */
};

/* exec_ctl[0], written by the daemon. */
struct exec_ctl {
	__u32 flags; /* enum exec_ctl_flag */
	__u32 pad;
};

enum exec_ctl_flag {
	/* the exec gate runs: execs in a mount namespace not in known_mntns
	 * are sent even for known files (the gate marks its mounts), and
	 * execs of new files on a filesystem in gated_devs do not wake the
	 * reader (the gate held them until their probes were in) */
	EXEC_CTL_GATE = 1,
};

/* One exec, on the exec ring (apart from crash events: exec traffic can
 * never take a crash event's room). */
struct exec_event {
	__u32 type; /* EVENT_EXEC */
	__u32 pid;  /* tgid, in the daemon's PID namespace */
	__u32 tid;
	__u32 flags; /* enum exec_flag */
	__u64 ktime;
	__u64 start_boottime;
	__u32 mntns; /* mount namespace inode */
	__u32 pad;
	struct exe_key exe;
	__u8 filename[MSG_LEN];
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
	__u32 action;   /* enum hold_action */
	__u32 seq;      /* this hit's number in its process (stop_state.hits) */
	__s32 goid_err;
	__s32 stack_bytes;
	__s32 exit_code; /* EVENT_EXIT: task->exit_code */
	__u64 regs[NREGS]; /* struct pt_regs (amd64) / user_pt_regs (arm64) */
	__u8 msg[MSG_LEN]; /* fatal message prefix, or exec filename */
	__u64 stack[STACK_DEPTH];
};

#endif
