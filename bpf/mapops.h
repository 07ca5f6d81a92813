/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* The map-op flight recorder's records, shared with the Go loader through
 * bpf2go -type. Naturally aligned, explicit padding; bpf/mapops_test.go
 * checks the Go sizes. */
#ifndef MAPSENTRY_MAPOPS_H
#define MAPSENTRY_MAPOPS_H

/* Writers kept per (pid, map): a small ring, oldest overwritten. Writes
 * are recorded only there; reads and iterations only per thread. */
#define MAPOP_WRITERS 8

/* Cookie of a map-op uprobe, set per (binary, function) by user space:
 *   bits 63..32 binary id
 *   bits 31..16 zero (reserved)
 *   bits 15..8  where the map is, plus MAPOP_CALLER2
 *   bits  7..0  enum mapop_kind */
enum mapop_kind {
	MAPOP_ASSIGN = 1, /* writers: 1..3 */
	MAPOP_DELETE = 2,
	MAPOP_CLEAR = 3,
	MAPOP_ACCESS = 4,
	MAPOP_ITER_START = 5,
	MAPOP_ITER_NEXT = 6,
};

enum mapop_conv {
	MAPOP_MAP_ARG1 = 1,    /* runtime.mapX(t, m, ...): map in the 2nd register */
	MAPOP_MAP_ARG0 = 2,    /* receiver first: (*Map).X(m, t, ...) */
	MAPOP_MAP_ITER24 = 3,  /* mapiternext(it): the map is at it+24 */
	MAPOP_CONV_MASK = 0x7f,
	MAPOP_CALLER2 = 0x80,  /* also record the caller's caller: called by a
				* probed wrapper (1.27 mapaccess1_X calls mapaccess2_X) */
};

/* One map operation as the probe saw it. */
struct mapop {
	__u64 ktime;
	__u64 g;       /* the goroutine's g (R14; arm64 R28): its goid is read at the crash */
	__u64 map;
	__u64 caller;  /* return address: a PC in the calling function */
	__u64 caller2; /* the caller's return address (MAPOP_CALLER2), else 0 */
	__u32 pid;
	__u32 tid;
	__u32 op;      /* enum mapop_kind */
	__u32 bin;     /* binary id from the cookie */
};

struct mapop_wkey {
	__u32 pid;
	__u32 pad;
	__u64 map;
};

struct mapop_writers {
	__u32 next; /* writer goroutines seen; a new one takes slot next % MAPOP_WRITERS */
	__u32 pad;
	struct mapop w[MAPOP_WRITERS];
};

#endif
