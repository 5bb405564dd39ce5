/*
 * Small helpers shared by the cmocka test programs: monotonic time, thread
 * start/join, a two-party handshake, and the descriptor count.
 */
#ifndef CANCEL_TESTUTIL_H
#define CANCEL_TESTUTIL_H

#include <dirent.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

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

#endif /* CANCEL_TESTUTIL_H */
