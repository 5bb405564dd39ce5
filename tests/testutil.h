/*
 * Small helpers shared by the cmocka test programs: monotonic time, thread
 * start/join, a two-party handshake, the descriptor count and its fixtures,
 * the waiter-count handshake, signal handlers and a SIGUSR1 storm.
 */
#ifndef CANCEL_TESTUTIL_H
#define CANCEL_TESTUTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "atomic.h"
#include "internal.h"

/* TU_TSAN: built with ThreadSanitizer (gcc or clang). */
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif

/*
 * TU_THREADS_AFTER_FORK, once at file scope in a test program whose forked
 * children start threads (the library's, or their own): ThreadSanitizer
 * forbids that by default after a multi-threaded fork.
 */
#ifdef TU_TSAN
#define TU_THREADS_AFTER_FORK                                                \
	const char *__tsan_default_options(void);                            \
	const char *__tsan_default_options(void)                             \
	{                                                                    \
		return "die_after_fork=0";                                   \
	}
#else
#define TU_THREADS_AFTER_FORK
#endif

/*
 * _exit() for a forked child that used the library. The coverage build
 * (CANCEL_COVERAGE, the coverage preset) first writes the child's
 * counters, which _exit() would drop. A function, not a macro: @code
 * (often the call that does the child's work) is evaluated before the
 * counters are written.
 */
#ifdef CANCEL_COVERAGE
void __gcov_dump(void);
#endif

static inline _Noreturn void
tu_child_exit(int code)
{
#ifdef CANCEL_COVERAGE
	__gcov_dump();
#endif
	_exit(code);
}

/*
 * fork() for a child that ends with tu_child_exit(). gcc --coverage turns
 * every direct call of fork() into __gcov_fork(), which zeroes the child's
 * counters once fork() has returned: what the library's fork handlers did
 * in the child (pthread_atfork) would be lost, as if they never ran. The
 * coverage build calls fork() through a pointer, which gcc leaves alone;
 * the child's dump then repeats the parent's counts up to the fork (the
 * counts grow, which code ran does not change).
 */
static inline pid_t
tu_fork(void)
{
#ifdef CANCEL_COVERAGE
	pid_t (*volatile fork_fn)(void) = fork;
	return fork_fn();
#else
	return fork();
#endif
}

static inline uint64_t
tu_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline pthread_t
tu_spawn(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	if (pthread_create(&t, NULL, fn, arg) != 0)
		abort();
	return t;
}

static inline void *
tu_join(pthread_t t)
{
	void *ret = NULL;
	pthread_join(t, &ret);
	return ret;
}

/* Spin (yielding) until *flag becomes nonzero: a handshake, not a sleep. */
static inline void
tu_await(const int *flag)
{
	while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) == 0)
		sched_yield();
}

static inline void
tu_signal(int *flag)
{
	__atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

/* Fill memory the library was given back (after destroy/unregister) with
 * 0xA5; tu_poisoned() tells whether it is still all 0xA5, i.e. nothing
 * wrote to it since. */
#define TU_POISON 0xA5

static inline void
tu_poison(void *p, size_t n)
{
	memset(p, TU_POISON, n);
}

static inline bool
tu_poisoned(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != TU_POISON)
			return false;
	return true;
}

/* Number of open descriptors of this process. */
static inline int
tu_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return -1;
	int n = 0;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the DIR's own fd */
}

/* Seed from CANCEL_TEST_SEED or the clock; printed so runs can be redone. */
static inline unsigned
tu_seed(const char *name)
{
	const char *e = getenv("CANCEL_TEST_SEED");
	unsigned seed = e ? (unsigned)strtoul(e, NULL, 0)
	                  : (unsigned)tu_now_ns();
	fprintf(stderr, "%s: seed %u (set CANCEL_TEST_SEED to repeat)\n", name,
	        seed);
	return seed;
}

/* Iteration count scaled by CANCEL_LONG_TESTS=1. */
static inline long
tu_rounds(long normal, long long_run)
{
	const char *e = getenv("CANCEL_LONG_TESTS");
	return (e != NULL && e[0] == '1') ? long_run : normal;
}

static inline uint64_t
tu_now_ms(void)
{
	return tu_now_ns() / 1000000u;
}

/* A short pause (200 us) for polling loops that should not spin hard. */
static inline void
tu_nap(void)
{
	struct timespec ts = {0, 200000};
	nanosleep(&ts, NULL);
}

/* tu_fd_count(), failing the test when /proc/self/fd cannot be read. */
static inline int
tu_fds(void)
{
	int n = tu_fd_count();
	assert_true(n >= 0);
	return n;
}

static inline int *
tu_fds_before(void)
{
	static int before;
	return &before;
}

/* cmocka fixtures: every test leaves the descriptor table as it found it. */
static inline int
tu_fds_setup(void **state)
{
	(void)state;
	*tu_fds_before() = tu_fds();
	return 0;
}

static inline int
tu_fds_check(void **state)
{
	(void)state;
	assert_int_equal(tu_fds(), *tu_fds_before());
	return 0;
}

/* The lowest descriptor number not in use. */
static inline int
tu_lowest_free_fd(void)
{
	int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
	assert_true(fd >= 0);
	close(fd);
	return fd;
}

/*
 * Lower the soft RLIMIT_NOFILE to the lowest free descriptor, so the next
 * new descriptor fails with EMFILE. The limits before go to @old (for
 * tu_restore_fd_limit); returns the lowered ones.
 */
static inline struct rlimit
tu_limit_fds(struct rlimit *old)
{
	assert_int_equal(getrlimit(RLIMIT_NOFILE, old), 0);
	struct rlimit low = *old;
	low.rlim_cur = (rlim_t)tu_lowest_free_fd();
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	return low;
}

static inline void
tu_restore_fd_limit(const struct rlimit *old)
{
	assert_int_equal(setrlimit(RLIMIT_NOFILE, old), 0);
}

/* Handshake: spin (yielding) until @n threads are counted as waiters on
 * @src. */
static inline void
tu_await_waiters(struct cancel_source *src, uint32_t n)
{
	while (cancel__state_waiters(ld_acquire(&src->state_)) < n)
		sched_yield();
}

/* Start @fn(@arg); return once @n threads wait on @src (tu_await_waiters). */
static inline pthread_t
tu_spawn_waiter(void *(*fn)(void *), void *arg, struct cancel_source *src,
                uint32_t n)
{
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
	tu_await_waiters(src, n);
	return t;
}

/* The same, napping between looks and failing the test after 10 s. */
static inline void
tu_await_waiters_bounded(struct cancel_source *src, uint32_t n)
{
	uint64_t start = tu_now_ms();
	while (cancel__state_waiters(ld_acquire(&src->state_)) < n) {
		assert_true(tu_now_ms() - start < 10000);
		tu_nap();
	}
}

/* Install @fn for @signo with @flags and an empty mask; the previous action
 * goes to @old for tu_restore_handler. */
static inline void
tu_install_handler(int signo, void (*fn)(int), int flags,
                   struct sigaction *old)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = flags;
	assert_int_equal(sigaction(signo, &sa, old), 0);
}

static inline void
tu_restore_handler(int signo, const struct sigaction *old)
{
	assert_int_equal(sigaction(signo, old, NULL), 0);
}

/*
 * A storm of SIGUSR1 at one thread, about one a millisecond, caught without
 * SA_RESTART (so blocked calls see EINTR) by a handler that counts them in
 * *tu_storm_hits().
 */
struct tu_storm {
	pthread_t target;
	pthread_t thread;
	int done;
	struct sigaction old;
};

static inline volatile sig_atomic_t *
tu_storm_hits(void)
{
	static volatile sig_atomic_t hits;
	return &hits;
}

static inline void
tu_storm_on_signal(int signo)
{
	(void)signo;
	(*tu_storm_hits())++;
}

static inline void *
tu_storm_main(void *arg)
{
	struct tu_storm *s = arg;
	struct timespec ms = {0, 1000000};
	while (!ld_acquire(&s->done)) {
		pthread_kill(s->target, SIGUSR1);
		nanosleep(&ms, NULL);
	}
	return NULL;
}

/* Start a storm at the calling thread. */
static inline void
tu_storm_start(struct tu_storm *s)
{
	tu_install_handler(SIGUSR1, tu_storm_on_signal, 0, &s->old);
	s->target = pthread_self();
	s->done = 0;
	*tu_storm_hits() = 0;
	assert_int_equal(pthread_create(&s->thread, NULL, tu_storm_main, s), 0);
}

/* Stop the storm and put the old SIGUSR1 action back. */
static inline void
tu_storm_stop(struct tu_storm *s)
{
	st_release(&s->done, 1); /* pairs with ld_acquire in tu_storm_main */
	pthread_join(s->thread, NULL);
	sigaction(SIGUSR1, &s->old, NULL);
}

#endif /* CANCEL_TESTUTIL_H */
