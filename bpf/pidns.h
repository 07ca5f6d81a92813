/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Which PID namespace the daemon watches, and the current thread's ids as
 * that namespace numbers them. Shared by the crash probes and the map-op
 * flight recorder: every tgid and tid that reaches user space, and every
 * BPF map key that user space writes by PID, goes through current_ids(),
 * the one place where kernel (host) PIDs become the daemon's PIDs.
 *
 * A daemon in a child PID namespace (a container without the host's PID
 * namespace, `unshare -p`, systemd-nspawn) looks PIDs up in its own /proc
 * and signals them with its own kill(2): a host PID there names nothing, or
 * another process. Threads outside the daemon's namespace are invisible to
 * it, so the probes ignore them: never held, no event.
 *
 * bpf_get_ns_current_pid_tgid() is not used: it answers only for threads
 * whose own namespace is exactly the given one, while a daemon also sees
 * (and must watch) the processes of namespaces nested below its own, e.g.
 * a container started inside the container. Walking struct pid's numbers[]
 * up to the thread's level finds the daemon's namespace at whatever depth
 * it is. */
#ifndef MAPSENTRY_PIDNS_H
#define MAPSENTRY_PIDNS_H

#include <bpf/bpf_core_read.h>

/* PROC_PID_INIT_INO: the initial (host) PID namespace's nsfs inode, fixed
 * by the kernel (include/linux/proc_ns.h). */
#define PIDNS_INIT_INO 0xEFFFFFFCU
/* MAX_PID_NS_LEVEL (kernel/pid_namespace.c): namespaces nest at most 32
 * deep, so numbers[] has at most 33 entries. */
#define PIDNS_MAX_LEVEL 33

/* The nsfs inode of the daemon's PID namespace (/proc/self/ns/pid), set by
 * the loader before load. The initial namespace keeps the plain helper:
 * there the kernel's PIDs are the daemon's, and the verifier drops the
 * walk below as dead code. */
volatile const __u32 pidns_ino = PIDNS_INIT_INO;

/* CO-RE views (the ___ms suffix keeps them apart from other local views;
 * relocation ignores it). */
struct ns_common___ms {
	unsigned int inum;
} __attribute__((preserve_access_index));
struct pid_namespace___ms {
	struct ns_common___ms ns;
} __attribute__((preserve_access_index));
struct upid___ms {
	int nr;
	struct pid_namespace___ms *ns;
} __attribute__((preserve_access_index));
struct pid___ms {
	unsigned int level;
	struct upid___ms numbers[1];
} __attribute__((preserve_access_index));
struct task_struct___ms {
	struct pid___ms *thread_pid;
	struct task_struct___ms *group_leader;
} __attribute__((preserve_access_index));

/* pidns_level: the index in p->numbers[] of the daemon's namespace, or -1
 * when p is not visible there (p's namespace is not the daemon's nor
 * below it). */
static __always_inline int pidns_level(struct pid___ms *p)
{
	if (!p)
		return -1;
	__u32 level = BPF_CORE_READ(p, level);
	__u64 base = (__u64)p + bpf_core_field_offset(struct pid___ms, numbers);
	__u64 size = bpf_core_type_size(struct upid___ms);
	for (int i = 0; i < PIDNS_MAX_LEVEL; i++) {
		if (i > level)
			break;
		struct upid___ms *u = (struct upid___ms *)(base + i * size);
		struct pid_namespace___ms *ns = BPF_CORE_READ(u, ns);
		if (ns && BPF_CORE_READ(ns, ns.inum) == pidns_ino)
			return i;
	}
	return -1;
}

static __always_inline __u32 pidns_nr(struct pid___ms *p, int level)
{
	__u64 base = (__u64)p + bpf_core_field_offset(struct pid___ms, numbers);
	struct upid___ms *u = (struct upid___ms *)(base + level * bpf_core_type_size(struct upid___ms));
	return BPF_CORE_READ(u, nr);
}

/* current_ids sets the current thread's tgid and tid as the daemon's PID
 * namespace numbers them and returns 1, or returns 0 when the thread is
 * outside that namespace: then nothing may be done to it. Every thread of
 * a process is in the same PID namespace, so the leader's number is at the
 * level found for the thread. */
static __always_inline int current_ids(__u32 *tgid, __u32 *tid)
{
	if (pidns_ino == PIDNS_INIT_INO) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		*tgid = pid_tgid >> 32;
		*tid = (__u32)pid_tgid;
		return 1;
	}
	struct task_struct___ms *task = (struct task_struct___ms *)bpf_get_current_task();
	struct pid___ms *p = BPF_CORE_READ(task, thread_pid);
	int level = pidns_level(p);
	if (level < 0)
		return 0;
	struct pid___ms *leader = BPF_CORE_READ(task, group_leader, thread_pid);
	if (!leader)
		return 0;
	*tid = pidns_nr(p, level);
	*tgid = pidns_nr(leader, level);
	return 1;
}

#endif
