/*
 * The one place that spells memory orders. Every atomic access in src/ goes
 * through these macros, on plain integer or pointer fields (cancel.h has no
 * _Atomic so that it compiles as C++). No standalone fences: ThreadSanitizer
 * cannot see them, so orders sit on the operations.
 */
#ifndef CANCEL_ATOMIC_H
#define CANCEL_ATOMIC_H

#define ld_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ld_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ld_seq(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

#define st_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define st_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define st_seq(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

#define xchg_acq_rel(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define xchg_acquire(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQUIRE)
#define xchg_release(p, v) __atomic_exchange_n((p), (v), __ATOMIC_RELEASE)

/* Compare-and-swap; on failure *expected is refreshed (acquire or relaxed). */
#define cas_acq_rel(p, expected, desired)                                    \
	__atomic_compare_exchange_n((p), (expected), (desired), 1,           \
	                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define cas_acquire(p, expected, desired)                                    \
	__atomic_compare_exchange_n((p), (expected), (desired), 1,           \
	                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)
#define cas_release(p, expected, desired)                                    \
	__atomic_compare_exchange_n((p), (expected), (desired), 1,           \
	                            __ATOMIC_RELEASE, __ATOMIC_RELAXED)
#define cas_seq(p, expected, desired)                                        \
	__atomic_compare_exchange_n((p), (expected), (desired), 0,           \
	                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)

#define fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define fetch_add_acq_rel(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
#define fetch_add_release(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELEASE)
#define fetch_add_seq(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define fetch_sub_acq_rel(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_ACQ_REL)
#define fetch_sub_release(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELEASE)
#define fetch_or_acq_rel(p, v) __atomic_fetch_or((p), (v), __ATOMIC_ACQ_REL)
#define fetch_or_release(p, v) __atomic_fetch_or((p), (v), __ATOMIC_RELEASE)
#define fetch_and_acq_rel(p, v) __atomic_fetch_and((p), (v), __ATOMIC_ACQ_REL)
#define fetch_and_release(p, v) __atomic_fetch_and((p), (v), __ATOMIC_RELEASE)

/* A polite pause inside a short spin. */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

#include <sched.h>

/*
 * One step of a short spin: pause a few times, then yield. On this
 * project's 2-vCPU machines the thread being waited for is often not
 * running while the other vCPU spins, and spinning longer measured 2-4x
 * slower (bench_core "2 threads" row: 4 pauses 0.96-1.17x of
 * std::stop_callback, 64 pauses 3.2-3.5x).
 */
static inline void
cancel__backoff(unsigned *spins)
{
	if (++*spins < 4)
		cpu_relax();
	else
		sched_yield();
}

#endif /* CANCEL_ATOMIC_H */
