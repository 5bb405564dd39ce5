/*
 * Wake latency: from the moment a thread calls cancel (or its raw
 * counterpart) to the moment the blocked waiter runs again. Each sample of
 * a libcancel wait alternates with a sample of the raw mechanism it is
 * built on, so both see the same machine load:
 *
 *   cancel_wait                  vs  raw futex hand-off
 *   cancel_sleep                 vs  raw futex hand-off, and a raw
 *                                    FUTEX_WAIT_BITSET with the same
 *                                    absolute CLOCK_MONOTONIC timeout (the
 *                                    fair peer: a timed wait arms and
 *                                    cancels a kernel hrtimer)
 *   cancel_cond_wait             vs  raw pthread_cond_signal hand-off
 *   cancel_poll                  vs  raw eventfd write + poll
 *
 * Build (from the repository root, after building the library in BUILD):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_wake.c \
 *      BUILD/libcancel_internal.a -lpthread -o bench_wake
 * Run: ./bench_wake [samples]   (default 2000 per row and mechanism)
 */
#include "atomic.h"
#include "cancel.h"
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum kind {
	K_WAIT,
	K_SLEEP,
	K_COND,
	K_POLL,
	K_RAW_FUTEX,
	K_RAW_FUTEX_TIMED,
	K_RAW_COND,
	K_RAW_EVENTFD,
	K_QUIT,
};

/* One sample's rendezvous between the driver and the waiter thread. */
struct rv {
	int seq;          /* bumped by the driver to start a sample */
	int kind;
	int blocking;     /* waiter is about to block (set by the waiter) */
	int done;         /* waiter ran again (set by the waiter) */
	uint64_t t_woke;  /* waiter's clock when it ran again */
	struct cancel_source src;
	uint32_t word;    /* raw futex */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int flag;         /* raw condvar predicate */
	int efd;          /* raw eventfd */
};

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
futex_wait(uint32_t *w, uint32_t v)
{
	syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

/* The wait cancel_sleep makes: absolute CLOCK_MONOTONIC deadline @dl. */
static void
futex_wait_until(uint32_t *w, uint32_t v, const struct timespec *dl)
{
	syscall(SYS_futex, w, FUTEX_WAIT_BITSET_PRIVATE, v, dl, NULL,
	        FUTEX_BITSET_MATCH_ANY);
}

static void
futex_wake(uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void *
waiter_main(void *arg)
{
	struct rv *r = arg;
	int seen = 0;
	for (;;) {
		while (ld_acquire(&r->seq) == seen)
			sched_yield();
		seen = ld_acquire(&r->seq);
		cancel_token tok = cancel_source_token(&r->src);
		struct pollfd pfd = {r->efd, POLLIN, 0};
		switch (r->kind) {
		case K_WAIT:
			st_release(&r->blocking, 1);
			cancel_wait(NULL, tok);
			break;
		case K_SLEEP:
			st_release(&r->blocking, 1);
			cancel_sleep(60ull * 1000000000ull, tok);
			break;
		case K_COND:
			pthread_mutex_lock(&r->mu);
			st_release(&r->blocking, 1);
			cancel_cond_wait(&r->cv, &r->mu, NULL, tok);
			pthread_mutex_unlock(&r->mu);
			break;
		case K_POLL:
			st_release(&r->blocking, 1);
			cancel_poll(NULL, 0, NULL, tok);
			break;
		case K_RAW_FUTEX:
			st_release(&r->blocking, 1);
			while (ld_acquire(&r->word) == 0)
				futex_wait(&r->word, 0);
			break;
		case K_RAW_FUTEX_TIMED: {
			/* cancel_sleep(60 s) computes its deadline the same
			 * way, before it blocks. */
			struct timespec dl;
			clock_gettime(CLOCK_MONOTONIC, &dl);
			dl.tv_sec += 60;
			st_release(&r->blocking, 1);
			while (ld_acquire(&r->word) == 0)
				futex_wait_until(&r->word, 0, &dl);
			break;
		}
		case K_RAW_COND:
			pthread_mutex_lock(&r->mu);
			st_release(&r->blocking, 1);
			while (!r->flag)
				pthread_cond_wait(&r->cv, &r->mu);
			pthread_mutex_unlock(&r->mu);
			break;
		case K_RAW_EVENTFD:
			st_release(&r->blocking, 1);
			while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
				;
			break;
		case K_QUIT:
			return NULL;
		}
		r->t_woke = now_ns();
		/* Release pairs with the driver's acquire of done. */
		st_release(&r->done, 1);
	}
}

/* One sample of @kind: latency in ns. */
static uint64_t
sample(struct rv *r, int kind)
{
	cancel_source_init(&r->src);
	st_relaxed(&r->word, 0);
	r->flag = 0;
	uint64_t v;
	while (read(r->efd, &v, sizeof(v)) > 0) /* reset the eventfd */
		;
	st_relaxed(&r->blocking, 0);
	st_relaxed(&r->done, 0);
	r->kind = kind;
	st_release(&r->seq, r->seq + 1);
	while (!ld_acquire(&r->blocking))
		sched_yield();
	/* Let the waiter actually go to sleep. */
	struct timespec gap = {0, 200000};
	nanosleep(&gap, NULL);
	uint64_t t0 = now_ns();
	switch (kind) {
	case K_WAIT:
	case K_SLEEP:
	case K_COND:
	case K_POLL:
		cancel_source_cancel(&r->src);
		break;
	case K_RAW_FUTEX:
	case K_RAW_FUTEX_TIMED:
		st_release(&r->word, 1);
		futex_wake(&r->word);
		break;
	case K_RAW_COND:
		pthread_mutex_lock(&r->mu);
		r->flag = 1;
		pthread_cond_signal(&r->cv);
		pthread_mutex_unlock(&r->mu);
		break;
	case K_RAW_EVENTFD:
		v = 1;
		if (write(r->efd, &v, sizeof(v)) < 0)
			abort();
		break;
	}
	while (!ld_acquire(&r->done))
		sched_yield();
	uint64_t lat = r->t_woke > t0 ? r->t_woke - t0 : 0;
	while (cancel_source_destroy(&r->src) == EBUSY)
		sched_yield(); /* the waiter may still be leaving */
	return lat;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void
stats(uint64_t *v, int n, double *med, double *p99)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	*med = v[n / 2] / 1000.0;
	*p99 = v[(n * 99) / 100] / 1000.0;
}

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	if (n < 100)
		n = 100;
	static struct rv r;
	pthread_mutex_init(&r.mu, NULL);
	pthread_cond_init(&r.cv, NULL);
	r.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r.efd < 0 || cancel__lt_ensure() != 0)
		return 1;
	pthread_t th;
	if (pthread_create(&th, NULL, waiter_main, &r) != 0)
		return 1;
	static const struct {
		const char *name, *raw_name;
		int kind, raw;
	} rows[] = {
		{"cancel_wait", "futex wake", K_WAIT, K_RAW_FUTEX},
		{"cancel_sleep", "futex wake", K_SLEEP, K_RAW_FUTEX},
		{"cancel_sleep", "futex, timed", K_SLEEP, K_RAW_FUTEX_TIMED},
		{"cancel_cond_wait", "cond_signal", K_COND, K_RAW_COND},
		{"cancel_poll", "eventfd+poll", K_POLL, K_RAW_EVENTFD},
	};
	uint64_t *a = malloc(sizeof(*a) * (size_t)n);
	uint64_t *b = malloc(sizeof(*b) * (size_t)n);
	if (a == NULL || b == NULL)
		return 1;
	printf("backend %s, %d samples each, latency in microseconds\n",
	       cancel__backend_name, n);
	printf("%-18s %9s %9s   %-14s %9s %9s\n", "libcancel", "median",
	       "p99", "raw", "median", "p99");
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		for (int k = 0; k < n; k++) {
			a[k] = sample(&r, rows[i].kind);
			b[k] = sample(&r, rows[i].raw);
		}
		double am, ap, bm, bp;
		stats(a, n, &am, &ap);
		stats(b, n, &bm, &bp);
		printf("%-18s %9.1f %9.1f   %-14s %9.1f %9.1f\n", rows[i].name,
		       am, ap, rows[i].raw_name, bm, bp);
	}
	r.kind = K_QUIT;
	st_release(&r.seq, r.seq + 1);
	pthread_join(th, NULL);
	free(a);
	free(b);
	close(r.efd);
	return 0;
}
