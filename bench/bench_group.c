/*
 * Groups: what a member costs and how fast a failure stops the siblings.
 *
 *   spawn: go + run + wait of 1,000 trivial members (return 0), the whole
 *          batch timed from the first go to wait's return, for
 *            - the group as built (parked threads reused),
 *            - the group creating one thread per member (test hook
 *              cancel__group_test_no_reuse: the design not chosen),
 *            - raw pthread_create of 1,000 threads, then pthread_join of
 *              each (the floor of any thread-per-member design).
 *          The three alternate within each repetition, so load changes
 *          hit all of them.
 *   stop:  16 members, 15 blocked (5 in cancel_cond_wait, each on its
 *          own mutex and condvar, then all five on one shared pair; 5 in
 *          cancel_sleep, 5 in cancel_read on a pipe) and one that fails:
 *          from the failing member's return to the last sibling's return
 *          (each member stamps CLOCK_MONOTONIC as it returns), and to
 *          wait's return (which also joins the 16 threads). The floor,
 *          alternating with it: 15 raw threads blocked in FUTEX_WAIT on
 *          one word, one FUTEX_WAKE, until the last of them ran again.
 *          Also per kind: when the last member of each kind returned.
 *
 * Run: bench_group [reps]   (default 41 spawn repetitions, 401 stop rounds;
 * the stop rounds are 10x reps). Nothing is asserted.
 */
#include "atomic.h"
#include "cancel.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t
pct(uint64_t *v, int n, int p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return v[(n - 1) * p / 100];
}

/* ------------------------------------------------------------------ */
/* spawn                                                              */
/* ------------------------------------------------------------------ */

#define NSPAWN 1000

static int
trivial(void *arg, cancel_token tok)
{
	(void)tok;
	fetch_add_relaxed((int *)arg, 1);
	return 0;
}

static void *
raw_trivial(void *arg)
{
	fetch_add_relaxed((int *)arg, 1);
	return NULL;
}

static uint64_t
run_group(bool reuse)
{
	static struct cancel_group g;
	int ran = 0;
	cancel__group_test_no_reuse(!reuse);
	cancel_group_init(&g, 0, CANCEL_TOKEN_NONE);
	uint64_t t0 = now_ns();
	for (int i = 0; i < NSPAWN; i++)
		if (cancel_group_go(&g, trivial, &ran) != 0)
			abort();
	if (cancel_group_wait(&g, NULL) != 0)
		abort();
	uint64_t t = now_ns() - t0;
	if (cancel_group_destroy(&g) != 0 || ran != NSPAWN)
		abort();
	cancel__group_test_no_reuse(false);
	return t;
}

static uint64_t
run_raw(void)
{
	static pthread_t t[NSPAWN];
	int ran = 0;
	uint64_t t0 = now_ns();
	for (int i = 0; i < NSPAWN; i++)
		if (pthread_create(&t[i], NULL, raw_trivial, &ran) != 0)
			abort();
	for (int i = 0; i < NSPAWN; i++)
		pthread_join(t[i], NULL);
	uint64_t d = now_ns() - t0;
	if (ran != NSPAWN)
		abort();
	return d;
}

/* ------------------------------------------------------------------ */
/* stop                                                               */
/* ------------------------------------------------------------------ */

#define NSIB 15

struct stop {
	struct cancel_group g;
	pthread_mutex_t mu[5];
	pthread_cond_t cv[5];
	int shared; /* 1: the five cond_wait members share mu[0], cv[0] */
	int pipes[5][2];
	int entered;
	uint64_t failed_ns;
	uint64_t returned_ns[NSIB];
};

struct sib {
	struct stop *s;
	int i;
};

static int
sibling(void *arg, cancel_token tok)
{
	struct sib *b = arg;
	struct stop *s = b->s;
	int rc;
	fetch_add_release(&s->entered, 1);
	if (b->i < 5) {
		int k = s->shared ? 0 : b->i;
		pthread_mutex_lock(&s->mu[k]);
		do
			rc = cancel_cond_wait(&s->cv[k], &s->mu[k], NULL, tok);
		while (rc == 0);
		pthread_mutex_unlock(&s->mu[k]);
	} else if (b->i < 10) {
		rc = cancel_sleep(10ull * 1000000000u, tok);
	} else {
		char c;
		size_t done;
		rc = cancel_read(s->pipes[b->i - 10][0], &c, 1, &done, NULL,
		                 tok);
	}
	s->returned_ns[b->i] = now_ns();
	return rc;
}

static int
failer(void *arg, cancel_token tok)
{
	(void)tok;
	struct stop *s = arg;
	while (ld_acquire(&s->entered) < NSIB)
		sched_yield();
	/* Let the last of them block (a bench, not a test: a pause). */
	struct timespec ms = {0, 2000000};
	nanosleep(&ms, NULL);
	s->failed_ns = now_ns();
	return EIO;
}

/* Per kind (cond_wait, sleep, read): the last member's return. */
static uint64_t *kind_last[3];
static int kind_round;

static void
run_stop(struct stop *s, uint64_t *to_members, uint64_t *to_wait)
{
	struct sib b[NSIB];
	s->entered = 0;
	cancel_group_init(&s->g, 0, CANCEL_TOKEN_NONE);
	for (int i = 0; i < NSIB; i++) {
		b[i] = (struct sib){.s = s, .i = i};
		if (cancel_group_go(&s->g, sibling, &b[i]) != 0)
			abort();
	}
	if (cancel_group_go(&s->g, failer, s) != 0)
		abort();
	if (cancel_group_wait(&s->g, NULL) != EIO)
		abort();
	uint64_t waited = now_ns();
	if (cancel_group_destroy(&s->g) != 0)
		abort();
	uint64_t last = s->failed_ns;
	for (int i = 0; i < NSIB; i++)
		if (s->returned_ns[i] > last)
			last = s->returned_ns[i];
	*to_members = last - s->failed_ns;
	*to_wait = waited - s->failed_ns;
	for (int k = 0; k < 3; k++) {
		uint64_t kl = s->failed_ns;
		for (int i = 5 * k; i < 5 * k + 5; i++)
			if (s->returned_ns[i] > kl)
				kl = s->returned_ns[i];
		kind_last[k][kind_round] = kl - s->failed_ns;
	}
	kind_round++;
}

/* The floor: 15 threads in FUTEX_WAIT, one wake, the last one to run. */
struct raw_stop {
	uint32_t word;
	int entered;
	uint64_t woke_ns[NSIB];
	int i;
};

struct raw_arg {
	struct raw_stop *s;
	int i;
};

static void *
raw_sleeper(void *arg)
{
	struct raw_arg *a = arg;
	struct raw_stop *s = a->s;
	fetch_add_release(&s->entered, 1);
	while (ld_acquire(&s->word) == 0)
		syscall(SYS_futex, &s->word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL,
		        0);
	s->woke_ns[a->i] = now_ns();
	return NULL;
}

static uint64_t
run_raw_stop(void)
{
	struct raw_stop s = {0};
	struct raw_arg a[NSIB];
	pthread_t t[NSIB];
	for (int i = 0; i < NSIB; i++) {
		a[i] = (struct raw_arg){.s = &s, .i = i};
		if (pthread_create(&t[i], NULL, raw_sleeper, &a[i]) != 0)
			abort();
	}
	while (ld_acquire(&s.entered) < NSIB)
		sched_yield();
	struct timespec ms = {0, 2000000};
	nanosleep(&ms, NULL);
	uint64_t t0 = now_ns();
	st_release(&s.word, 1u);
	syscall(SYS_futex, &s.word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
	for (int i = 0; i < NSIB; i++)
		pthread_join(t[i], NULL);
	uint64_t last = t0;
	for (int i = 0; i < NSIB; i++)
		if (s.woke_ns[i] > last)
			last = s.woke_ns[i];
	return last - t0;
}

int
main(int argc, char **argv)
{
	int reps = argc > 1 ? atoi(argv[1]) : 41;
	if (reps < 3)
		reps = 3;
	uint64_t *a = calloc((size_t)reps, sizeof(*a));
	uint64_t *b = calloc((size_t)reps, sizeof(*b));
	uint64_t *c = calloc((size_t)reps, sizeof(*c));
	if (a == NULL || b == NULL || c == NULL)
		return 1;
	/* Library threads up first; one warm-up of each. */
	cancel_signal_prepare();
	run_group(true);
	run_group(false);
	run_raw();
	for (int r = 0; r < reps; r++) {
		/* Rotate the order so no column always goes first. */
		for (int k = 0; k < 3; k++) {
			switch ((r + k) % 3) {
			case 0: a[r] = run_group(true); break;
			case 1: b[r] = run_group(false); break;
			default: c[r] = run_raw(); break;
			}
		}
	}
	uint64_t ra = pct(a, reps, 50), rb = pct(b, reps, 50);
	uint64_t rc = pct(c, reps, 50);
	printf("spawn: go+run+wait of %d trivial members, median of %d "
	       "(us per batch [min-max])\n", NSPAWN, reps);
	printf("  group, threads reused      %8.0f [%.0f-%.0f]  %.2fx raw\n",
	       ra / 1e3, a[0] / 1e3, a[reps - 1] / 1e3, (double)ra / rc);
	printf("  group, thread per member   %8.0f [%.0f-%.0f]  %.2fx raw\n",
	       rb / 1e3, b[0] / 1e3, b[reps - 1] / 1e3, (double)rb / rc);
	printf("  raw pthread_create+join    %8.0f [%.0f-%.0f]\n", rc / 1e3,
	       c[0] / 1e3, c[reps - 1] / 1e3);

	int rounds = reps * 10;
	struct stop *s = calloc(1, sizeof(*s));
	uint64_t *m = calloc((size_t)rounds, sizeof(*m));
	uint64_t *w = calloc((size_t)rounds, sizeof(*w));
	if (s == NULL || m == NULL || w == NULL)
		return 1;
	for (int i = 0; i < 5; i++) {
		pthread_mutex_init(&s->mu[i], NULL);
		pthread_cond_init(&s->cv[i], NULL);
	}
	for (int i = 0; i < 5; i++)
		if (pipe2(s->pipes[i], O_CLOEXEC | O_NONBLOCK) != 0)
			return 1;
	uint64_t *f = calloc((size_t)rounds, sizeof(*f));
	if (f == NULL)
		return 1;
	for (int k = 0; k < 3; k++) {
		kind_last[k] = calloc((size_t)rounds, sizeof(uint64_t));
		if (kind_last[k] == NULL)
			return 1;
	}
	static const char *const kind[3] = {"cond_wait", "sleep", "read"};
	for (int shared = 0; shared < 2; shared++) {
		s->shared = shared;
		kind_round = 0;
		for (int r = 0; r < rounds; r++) {
			run_stop(s, &m[r], &w[r]);
			f[r] = run_raw_stop();
		}
		printf("stop: first failure -> all %d members returned "
		       "(5 cond_wait on %s, 5 sleep, 5 read), %d rounds "
		       "(us)\n",
		       NSIB + 1,
		       shared ? "one shared mutex and condvar"
		              : "their own mutexes and condvars",
		       rounds);
		/* Percentiles first (they sort), then the max. */
		uint64_t m50 = pct(m, rounds, 50), m90 = pct(m, rounds, 90);
		uint64_t w50 = pct(w, rounds, 50), w90 = pct(w, rounds, 90);
		uint64_t f50 = pct(f, rounds, 50), f90 = pct(f, rounds, 90);
		printf("  members returned  p50 %7.1f  p90 %7.1f  max %7.1f\n",
		       m50 / 1e3, m90 / 1e3, m[rounds - 1] / 1e3);
		printf("  wait returned     p50 %7.1f  p90 %7.1f  max %7.1f\n",
		       w50 / 1e3, w90 / 1e3, w[rounds - 1] / 1e3);
		for (int k = 0; k < 3; k++) {
			uint64_t k50 = pct(kind_last[k], rounds, 50);
			uint64_t k90 = pct(kind_last[k], rounds, 90);
			printf("  last %-9s    p50 %7.1f  p90 %7.1f\n",
			       kind[k], k50 / 1e3, k90 / 1e3);
		}
		printf("  raw: 15 threads, one FUTEX_WAKE, last one running\n"
		       "                    p50 %7.1f  p90 %7.1f  max %7.1f\n",
		       f50 / 1e3, f90 / 1e3, f[rounds - 1] / 1e3);
	}
	for (int k = 0; k < 3; k++)
		free(kind_last[k]);
	for (int i = 0; i < 5; i++) {
		close(s->pipes[i][0]);
		close(s->pipes[i][1]);
	}
	free(s);
	free(m);
	free(w);
	free(f);
	free(a);
	free(b);
	free(c);
	return 0;
}
