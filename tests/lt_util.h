/*
 * Helpers shared by the lifetime tests (test_lifetime.c,
 * test_lifetime_fork.c): heap objects released the moment the API allows
 * it, threads joined with a bound, and a look at what a thread is blocked
 * in.
 *
 * lt_release(): under AddressSanitizer the memory is freed, so any later
 * access by the library is reported. Elsewhere it is filled with 0xA5 and
 * kept until the test's teardown, which fails if a byte changed (a write
 * after release) and frees it.
 */
#ifndef CANCEL_LT_UTIL_H
#define CANCEL_LT_UTIL_H

#include "testutil.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/syscall.h>

#if defined(__SANITIZE_ADDRESS__)
#define LT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LT_ASAN 1
#endif
#endif

/* Forked children here start threads (the library's, or their own). */
TU_THREADS_AFTER_FORK

/* ------------------------------------------------------------------ */
/* Released heap objects                                              */
/* ------------------------------------------------------------------ */

#define LT_POISON 0xA5
#define LT_MAX_POISONED 64

static pthread_mutex_t lt_poison_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	unsigned char *p;
	size_t n;
} lt_poisoned[LT_MAX_POISONED];
static int lt_npoisoned;

static inline void *
lt_alloc(size_t n)
{
	void *p = malloc(n);
	if (p == NULL)
		abort();
	return p;
}

/* A new heap source, initialized. */
static inline struct cancel_source *
lt_new_source(void)
{
	struct cancel_source *s = lt_alloc(sizeof(*s));
	memset(s, 0x5A, sizeof(*s)); /* init must not rely on zeroes */
	cancel_source_init(s);
	return s;
}

/* A zeroed heap callback record. */
static inline struct cancel_callback *
lt_new_callback(void)
{
	struct cancel_callback *cb = lt_alloc(sizeof(*cb));
	memset(cb, 0, sizeof(*cb));
	return cb;
}

/* The API said @p (@n bytes) may be freed: free it, or poison it. */
static inline void
lt_release(void *p, size_t n)
{
#ifdef LT_ASAN
	(void)n;
	free(p);
#else
	memset(p, LT_POISON, n);
	pthread_mutex_lock(&lt_poison_mu);
	if (lt_npoisoned < LT_MAX_POISONED) {
		lt_poisoned[lt_npoisoned].p = p;
		lt_poisoned[lt_npoisoned].n = n;
		lt_npoisoned++;
		p = NULL;
	}
	pthread_mutex_unlock(&lt_poison_mu);
	free(p); /* list full: free at once (NULL if kept) */
#endif
}

/* Teardown: every poisoned object still poisoned; free them. Returns
 * the number of objects written to after their release. */
static inline int
lt_check_released(void)
{
	int bad = 0;
	pthread_mutex_lock(&lt_poison_mu);
	for (int i = 0; i < lt_npoisoned; i++) {
		for (size_t k = 0; k < lt_poisoned[i].n; k++) {
			if (lt_poisoned[i].p[k] != LT_POISON) {
				bad++;
				break;
			}
		}
		free(lt_poisoned[i].p);
	}
	lt_npoisoned = 0;
	pthread_mutex_unlock(&lt_poison_mu);
	return bad;
}

/* ------------------------------------------------------------------ */
/* Threads with a bounded join                                        */
/* ------------------------------------------------------------------ */

struct lt_thread {
	pthread_t th;
	void *(*fn)(void *);
	void *arg;
	int done;   /* release-stored when fn returned */
	bool live;  /* started and not joined */
};

static inline void *
lt_trampoline(void *arg)
{
	struct lt_thread *t = arg;
	t->fn(t->arg);
	st_release(&t->done, 1); /* pairs with lt_finished_within */
	return NULL;
}

static inline void
lt_start(struct lt_thread *t, void *(*fn)(void *), void *arg)
{
	t->fn = fn;
	t->arg = arg;
	t->done = 0;
	t->live = true;
	assert_int_equal(pthread_create(&t->th, NULL, lt_trampoline, t), 0);
}

/* True if @t's function returns within @ms milliseconds. */
static inline bool
lt_finished_within(struct lt_thread *t, uint64_t ms)
{
	uint64_t start = tu_now_ms();
	while (!ld_acquire(&t->done)) {
		if (tu_now_ms() - start >= ms)
			return false;
		tu_nap();
	}
	return true;
}

/* Join @t if it finishes within @ms; false (left running) if not. */
static inline bool
lt_join_within(struct lt_thread *t, uint64_t ms)
{
	if (!t->live)
		return true;
	if (!lt_finished_within(t, ms))
		return false;
	pthread_join(t->th, NULL);
	t->live = false;
	return true;
}

/* Join or fail the test (the thread is left behind, hung). */
#define LT_JOIN(t, ms, what)                                                 \
	do {                                                                 \
		if (!lt_join_within((t), (ms)))                              \
			fail_msg("%s did not return within %d ms", (what),  \
			         (int)(ms));                                 \
	} while (0)

/* True once *@flag is nonzero, false if @ms pass first. */
static inline bool
lt_await_within(const int *flag, uint64_t ms)
{
	uint64_t start = tu_now_ms();
	while (!ld_acquire(flag)) {
		if (tu_now_ms() - start >= ms)
			return false;
		sched_yield();
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* What a thread is blocked in                                        */
/* ------------------------------------------------------------------ */

static inline pid_t
lt_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/*
 * The system call thread @tid of this process is in (its number), -1 if
 * running, -2 if it cannot be told. Reads /proc with plain system calls
 * (no stdio, no lock): usable from inside interposed calls.
 */
static inline long
lt_thread_syscall(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	int fd = (int)syscall(SYS_openat, AT_FDCWD, path,
	                      O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -2;
	char buf[64];
	long n = syscall(SYS_read, fd, buf, sizeof(buf) - 1);
	syscall(SYS_close, fd);
	if (n <= 0)
		return -2;
	buf[n] = '\0';
	if (strncmp(buf, "running", 7) == 0)
		return -1;
	return strtol(buf, NULL, 10);
}

/* Wait up to @ms for thread @tid to block in futex(2). */
static inline bool
lt_await_futex(pid_t tid, uint64_t ms)
{
	uint64_t start = tu_now_ms();
	for (;;) {
		long sc = lt_thread_syscall(tid);
		if (sc == SYS_futex)
			return true;
		if (sc == -2 || tu_now_ms() - start >= ms)
			return false;
		tu_nap();
	}
}

/* ------------------------------------------------------------------ */
/* main: optional name filter (argv[1], a substring)                  */
/* ------------------------------------------------------------------ */

static inline size_t
lt_filter(struct CMUnitTest *tests, size_t n, int argc, char **argv)
{
	if (argc < 2)
		return n;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strstr(tests[i].name, argv[1]) != NULL)
			tests[k++] = tests[i];
	return k;
}

#endif /* CANCEL_LT_UTIL_H */
