/*
 * Loop delivery (cancel_queue): what it costs to have cancel callbacks run
 * on an event loop's thread instead of the canceling one.
 *
 * 1. Latency: a loop thread blocked in epoll_wait on a set holding the
 *    queue's fd and a raw eventfd. The driver thread either cancels a
 *    source with one queued callback (measured until that callback runs
 *    on the loop, from cancel_queue_run) or writes the raw eventfd
 *    (measured until the loop has read it): the hand-off the queue is
 *    built on. Samples alternate (and alternate which goes first), so
 *    both see the same load. Target: queue p50 <= 1.1x raw p50.
 * 2. Cost per callback at 1,024 callbacks per cancel, one thread: cancel
 *    + cancel_queue_run of 1,024 queued callbacks, against a cancel that
 *    runs 1,024 plain callbacks inline. Rounds alternate. Target: <= 2x.
 *
 * Medians only; nothing is asserted.
 * Run: ./bench_queue [samples]   (default 2000 latency samples per kind,
 *                                 samples / 10 rounds of 1,024 callbacks)
 */
#include "atomic.h"
#include "cancel.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#ifndef NCB
#define NCB 1024
#endif

/* The driver and the loop thread's rendezvous. */
static struct {
	int seq;       /* bumped by the driver to start a sample */
	int quit;
	int blocking;  /* loop is about to block (set by the loop) */
	int done;      /* loop handled the sample (set by the loop) */
	uint64_t t_woke;
	int ep, efd;
	struct cancel_queue q;
} rv;

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Runs on the loop thread from cancel_queue_run. */
static void
on_cancel(void *arg)
{
	(void)arg;
	rv.t_woke = now_ns();
	/* Release pairs with the driver's acquire of done. */
	st_release(&rv.done, 1);
}

static void *
loop_main(void *arg)
{
	(void)arg;
	int seen = 0;
	for (;;) {
		while (ld_acquire(&rv.seq) == seen)
			sched_yield();
		seen = ld_acquire(&rv.seq);
		if (ld_acquire(&rv.quit))
			return NULL;
		st_release(&rv.blocking, 1);
		struct epoll_event ev;
		int n;
		while ((n = epoll_wait(rv.ep, &ev, 1, -1)) < 0 && errno == EINTR)
			;
		if (n != 1)
			abort();
		if (ev.data.fd == rv.efd) {
			uint64_t v;
			if (read(rv.efd, &v, sizeof(v)) != sizeof(v))
				abort();
			rv.t_woke = now_ns();
			/* Release pairs with the driver's acquire of done. */
			st_release(&rv.done, 1);
		} else {
			cancel_queue_run(&rv.q);
		}
	}
}

/* One latency sample, in ns: queued cancel (@queued) or raw eventfd. */
static uint64_t
sample(int queued)
{
	struct cancel_source src;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	cancel_source_init(&src);
	if (queued &&
	    cancel_callback_register_queued(&cb, on_cancel, NULL, &rv.q,
	                                    cancel_source_token(&src)) != 0)
		abort();
	st_relaxed(&rv.blocking, 0);
	st_relaxed(&rv.done, 0);
	st_release(&rv.seq, rv.seq + 1);
	while (!ld_acquire(&rv.blocking))
		sched_yield();
	/* Let the loop actually go to sleep in epoll_wait. */
	struct timespec gap = {0, 200000};
	nanosleep(&gap, NULL);
	uint64_t t0 = now_ns();
	if (queued) {
		cancel_source_cancel(&src);
	} else {
		uint64_t v = 1;
		if (write(rv.efd, &v, sizeof(v)) != sizeof(v))
			abort();
	}
	while (!ld_acquire(&rv.done))
		sched_yield();
	uint64_t lat = rv.t_woke > t0 ? rv.t_woke - t0 : 0;
	if (cancel_source_destroy(&src) != 0)
		abort();
	return lat;
}

static unsigned long sink;

static void
count(void *arg)
{
	(void)arg;
	sink++;
}

/* One round: ns per callback for a cancel running NCB callbacks. */
static double
per_callback(int queued, struct cancel_queue *q, struct cancel_callback *cbs)
{
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_token tok = cancel_source_token(&src);
	memset(cbs, 0, NCB * sizeof(*cbs));
	for (int i = 0; i < NCB; i++) {
		/* register: true when registered; _queued: 0. */
		bool ok = queued ? cancel_callback_register_queued(
		                           &cbs[i], count, NULL, q, tok) == 0
		                 : cancel_callback_register(&cbs[i], count,
		                                            NULL, tok);
		if (!ok)
			abort();
	}
	unsigned long before = sink;
	uint64_t t0 = now_ns();
	cancel_source_cancel(&src);
	if (queued)
		cancel_queue_run(q);
	uint64_t t1 = now_ns();
	if (sink - before != NCB || cancel_source_destroy(&src) != 0)
		abort();
	return (double)(t1 - t0) / NCB;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int
cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	if (n < 100)
		n = 100;
	rv.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	rv.ep = epoll_create1(EPOLL_CLOEXEC);
	if (rv.efd < 0 || rv.ep < 0 || cancel_queue_init(&rv.q) != 0)
		return 1;
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = rv.efd};
	epoll_ctl(rv.ep, EPOLL_CTL_ADD, rv.efd, &ev);
	ev.data.fd = cancel_queue_fd(&rv.q);
	epoll_ctl(rv.ep, EPOLL_CTL_ADD, ev.data.fd, &ev);
	pthread_t th;
	if (pthread_create(&th, NULL, loop_main, NULL) != 0)
		return 1;

	uint64_t *a = malloc(sizeof(*a) * (size_t)n);
	uint64_t *b = malloc(sizeof(*b) * (size_t)n);
	if (a == NULL || b == NULL)
		return 1;
	for (int k = 0; k < n; k++) {
		if (k & 1) {
			b[k] = sample(0);
			a[k] = sample(1);
		} else {
			a[k] = sample(1);
			b[k] = sample(0);
		}
	}
	st_release(&rv.quit, 1);
	st_release(&rv.seq, rv.seq + 1);
	pthread_join(th, NULL);
	qsort(a, (size_t)n, sizeof(*a), cmp_u64);
	qsort(b, (size_t)n, sizeof(*b), cmp_u64);
	printf("backend %s\n", cancel__backend_name);
	printf("cancel -> callback on the loop (epoll_wait), %d paired "
	       "samples, p50 us:\n", n);
	printf("  queued callback %8.1f   raw eventfd %8.1f   ratio %.2fx "
	       "(target <= 1.1x)\n", a[n / 2] / 1000.0, b[n / 2] / 1000.0,
	       (double)a[n / 2] / (double)b[n / 2]);

	int rounds = n / 10 | 1;
	double *qa = malloc(sizeof(*qa) * (size_t)rounds);
	double *ia = malloc(sizeof(*ia) * (size_t)rounds);
	struct cancel_callback *cbs = malloc(NCB * sizeof(*cbs));
	if (qa == NULL || ia == NULL || cbs == NULL)
		return 1;
	for (int k = 0; k < rounds; k++) {
		qa[k] = per_callback(1, &rv.q, cbs);
		ia[k] = per_callback(0, &rv.q, cbs);
	}
	qsort(qa, (size_t)rounds, sizeof(*qa), cmp_dbl);
	qsort(ia, (size_t)rounds, sizeof(*ia), cmp_dbl);
	printf("cost per callback, %d callbacks per cancel, %d rounds, "
	       "median ns:\n", NCB, rounds);
	printf("  queued (cancel + run) %6.1f   inline %6.1f   ratio %.2fx "
	       "(target <= 2x)\n", qa[rounds / 2], ia[rounds / 2],
	       qa[rounds / 2] / ia[rounds / 2]);
	if (cancel_queue_destroy(&rv.q) != 0)
		return 1;
	free(a);
	free(b);
	free(qa);
	free(ia);
	free(cbs);
	close(rv.ep);
	close(rv.efd);
	return 0;
}
