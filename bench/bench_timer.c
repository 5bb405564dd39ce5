/*
 * bench_timer: the cost of arming and disarming a source's timer, and how
 * late the library thread fires (deadline to callback start) next to raw
 * clock_nanosleep(TIMER_ABSTIME) lateness measured in the same run, the
 * samples interleaved so both see the same machine load.
 *
 * Then the timer at scale: with N = 1,000 / 100,000 / 1,000,000 sources
 * armed 30-90 s ahead, the cost of a request's lifecycle (init + arm +
 * destroy), of re-arming a random armed source (pushed later, as a
 * keep-alive timeout is, and to a random deadline 30-90 s ahead), the
 * random-touch floor (reading one random source's first byte) and the
 * clock-and-touch floor (what any re-arm must do, by hand) beside them,
 * and how late a burst of N deadlines spread over 100 ms fires. The same
 * figures for a bench-local re-implementation of the pairing heap the
 * library used before its timing wheel (one mutex, the same intrusive
 * layout and size) are printed beside them; its burst is fired by a
 * plain thread sleeping in clock_nanosleep(), so it pays no cancel or
 * callback (in the library's favour of the heap). Last, 2 threads
 * re-arming their own sources against 1.
 *
 * Usage: bench_timer [samples [max_n]]   (default 2000 and 1000000;
 * samples at least 100; with fewer than 1000 samples, max_n defaults to
 * 100000)
 * Uses the public API only; link with libcancel and pthreads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "cancel.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define RUNS 11
#define OPS 100000
#define OTHERS 10000
#define SCALE_OPS 200000
#define SCALE_RUNS 5
#define BURST_NS (100 * MS)

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static struct timespec
to_ts(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / SEC), (long)(ns % SEC)};
	return ts;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Sorts @v; returns the value at quantile @q (0..1). */
static uint64_t
quantile(uint64_t *v, size_t n, double q)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i];
}

/* Median over RUNS of the ns per arm+disarm pair on @src. */
static double
arm_disarm_ns(struct cancel_source *src)
{
	uint64_t per[RUNS];

	for (int r = 0; r < RUNS; r++) {
		uint64_t t0 = now_ns();
		for (int i = 0; i < OPS; i++) {
			cancel_source_cancel_after(src, 3600 * SEC);
			cancel_source_cancel_after(src, CANCEL_NEVER);
		}
		per[r] = (now_ns() - t0) * 1000 / OPS; /* ps per pair */
	}
	return (double)quantile(per, RUNS, 0.5) / 1000.0;
}

/* Median over RUNS of the ns per re-arm of an armed @src. */
static double
rearm_ns(struct cancel_source *src)
{
	uint64_t per[RUNS];

	for (int r = 0; r < RUNS; r++) {
		uint64_t t0 = now_ns();
		for (int i = 0; i < OPS; i++)
			cancel_source_cancel_after(src,
		                           3600 * SEC + (i & 1023));
		per[r] = (now_ns() - t0) * 1000 / OPS;
	}
	cancel_source_cancel_after(src, CANCEL_NEVER);
	return (double)quantile(per, RUNS, 0.5) / 1000.0;
}

/* Median over RUNS of the ns per re-arm that is earlier each time, so
 * every one wakes the library thread. */
static double
rearm_kick_ns(struct cancel_source *src)
{
	uint64_t per[RUNS];

	for (int r = 0; r < RUNS; r++) {
		/* Below every deadline planned so far: each arm kicks. */
		uint64_t top = now_ns() + (1800 - 60 * (uint64_t)r) * SEC;
		uint64_t t0 = now_ns();
		for (int i = 0; i < OPS; i++) {
			struct timespec dl = to_ts(top - (uint64_t)i * 1000);
			cancel_source_cancel_at(src, &dl);
		}
		per[r] = (now_ns() - t0) * 1000 / OPS;
		cancel_source_cancel_after(src, CANCEL_NEVER);
	}
	return (double)quantile(per, RUNS, 0.5) / 1000.0;
}

/* One timer sample: the callback records its start and signals. */
struct fire {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t at;
	int done;
};

static void
fire_fn(void *arg)
{
	struct fire *f = arg;
	uint64_t t = now_ns();

	pthread_mutex_lock(&f->mu);
	f->at = t;
	f->done = 1;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static int
timer_sample(struct fire *f, uint64_t deadline, uint64_t *late)
{
	struct cancel_source s;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	struct timespec dl = to_ts(deadline);
	int rc = 0;

	cancel_source_init(&s);
	f->done = 0;
	cancel_callback_register(&cb, fire_fn, f, cancel_source_token(&s));
	if (cancel_source_cancel_at(&s, &dl) != 0)
		return -1;
	struct timespec lim = to_ts(deadline + 5 * SEC);
	pthread_mutex_lock(&f->mu);
	while (!f->done && rc == 0)
		rc = pthread_cond_timedwait(&f->cv, &f->mu, &lim);
	pthread_mutex_unlock(&f->mu);
	cancel_callback_unregister(&cb);
	if (cancel_source_destroy(&s) != 0 || !f->done)
		return -1;
	*late = f->at - deadline;
	return 0;
}

static uint64_t
sleep_sample(uint64_t deadline)
{
	struct timespec dl = to_ts(deadline);

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL) ==
	       EINTR)
		;
	return now_ns() - deadline;
}

static void
row(const char *name, uint64_t *v, size_t n)
{
	uint64_t med = quantile(v, n, 0.5);
	uint64_t p99 = quantile(v, n, 0.99);
	printf("  %-36s %10.1f %10.1f %10.1f\n", name, (double)med / 1000.0,
	       (double)p99 / 1000.0, (double)v[n - 1] / 1000.0);
}


/* ------------------------------------------------------------------ */
/* At scale                                                           */
/* ------------------------------------------------------------------ */

static uint64_t
rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Median of SCALE_RUNS runs of @fn(ops), in ns per op. */
static double
med_ns(void (*fn)(void *, size_t), void *arg)
{
	uint64_t per[SCALE_RUNS];

	for (int r = 0; r < SCALE_RUNS; r++) {
		uint64_t t0 = now_ns();
		fn(arg, SCALE_OPS);
		per[r] = (now_ns() - t0) * 1000 / SCALE_OPS;
	}
	return (double)quantile(per, SCALE_RUNS, 0.5) / 1000.0;
}

struct scale {
	struct cancel_source *srcs;
	struct hsrc *hs;
	struct cancel_source *shadow; /* as srcs, never given to the library */
	size_t n;
	uint64_t x;
	volatile unsigned sink;
};

static void
k_floor(void *a, size_t ops)
{
	struct scale *sc = a;
	unsigned sum = 0;
	for (size_t i = 0; i < ops; i++)
		sum += *(volatile unsigned char *)&sc->srcs[rnd(&sc->x) %
		                                            sc->n];
	sc->sink = sum;
}

/*
 * The least any re-arm can cost: what k_later asks of the library, done
 * by hand on a shadow array of the same size and layout: read the clock,
 * then load and store one word of a random source. No re-arm can do less
 * (it must read the clock and touch the source), and this floor shows
 * why the random-touch floor is out of reach: the clock read waits for
 * the previous call's loads (the vDSO orders its TSC read after them), so
 * a cold source costs one whole miss latency where the random-touch loop
 * overlaps many misses.
 */
static void
k_clock_touch(void *a, size_t ops)
{
	struct scale *sc = a;
	for (size_t i = 0; i < ops; i++) {
		uint64_t *w = (uint64_t *)(void *)&sc->shadow[rnd(&sc->x) %
		                                              sc->n];
		__builtin_prefetch(w, 1);
		uint64_t d = now_ns() + 90 * SEC + (i & 1023);
		if (__atomic_load_n(w, __ATOMIC_RELAXED) < d)
			__atomic_store_n(w, d, __ATOMIC_RELAXED);
	}
}

static void
k_life(void *a, size_t ops)
{
	struct scale *sc = a;
	struct cancel_source s;
	for (size_t i = 0; i < ops; i++) {
		cancel_source_init(&s);
		cancel_source_cancel_after(&s, 30 * SEC + rnd(&sc->x) %
		                                              (60 * SEC));
		if (cancel_source_destroy(&s) != 0)
			abort();
	}
}

static void
k_later(void *a, size_t ops)
{
	struct scale *sc = a;
	for (size_t i = 0; i < ops; i++)
		cancel_source_cancel_after(&sc->srcs[rnd(&sc->x) % sc->n],
		                           90 * SEC + (i & 1023));
}

static void
k_random(void *a, size_t ops)
{
	struct scale *sc = a;
	for (size_t i = 0; i < ops; i++) {
		uint64_t r = rnd(&sc->x);
		cancel_source_cancel_after(&sc->srcs[r % sc->n],
		                           30 * SEC + (r >> 20) % (60 * SEC));
	}
}

/*
 * The pairing heap the library used before (bench-local re-implementation
 * of the same structure: intrusive, 168-byte sources, one mutex).
 */
struct hsrc {
	uint64_t deadline;
	struct hsrc *child, *next, *prev;
	uint32_t armed;
	char rest[168 - 40];
};

static pthread_mutex_t h_mu = PTHREAD_MUTEX_INITIALIZER;
static struct hsrc *h_root;

static struct hsrc *
h_meld(struct hsrc *a, struct hsrc *b)
{
	if (b->deadline < a->deadline) {
		struct hsrc *t = a;
		a = b;
		b = t;
	}
	b->next = a->child;
	if (a->child != NULL)
		a->child->prev = b;
	b->prev = a;
	a->child = b;
	return a;
}

static struct hsrc *
h_pairs(struct hsrc *first)
{
	struct hsrc *stack = NULL, *root = NULL;
	while (first != NULL) {
		struct hsrc *a = first, *b = a->next;
		struct hsrc *rest = b != NULL ? b->next : NULL;
		a->next = a->prev = NULL;
		if (b != NULL) {
			b->next = b->prev = NULL;
			a = h_meld(a, b);
		}
		a->next = stack;
		stack = a;
		first = rest;
	}
	while (stack != NULL) {
		struct hsrc *a = stack;
		stack = a->next;
		a->next = NULL;
		root = root == NULL ? a : h_meld(root, a);
	}
	return root;
}

static void
h_remove(struct hsrc *s)
{
	if (s == h_root) {
		h_root = h_pairs(s->child);
	} else {
		struct hsrc *p = s->prev;
		if (p->child == s)
			p->child = s->next;
		else
			p->next = s->next;
		if (s->next != NULL)
			s->next->prev = p;
		struct hsrc *sub = h_pairs(s->child);
		if (sub != NULL)
			h_root = h_meld(h_root, sub);
	}
	s->child = s->next = s->prev = NULL;
	s->armed = 0;
}

static void
h_arm(struct hsrc *s, uint64_t d)
{
	pthread_mutex_lock(&h_mu);
	if (s->armed)
		h_remove(s);
	s->deadline = d;
	s->child = s->next = s->prev = NULL;
	h_root = h_root == NULL ? s : h_meld(h_root, s);
	s->armed = 1;
	pthread_mutex_unlock(&h_mu);
}

static void
h_disarm(struct hsrc *s)
{
	if (!s->armed)
		return;
	pthread_mutex_lock(&h_mu);
	if (s->armed)
		h_remove(s);
	pthread_mutex_unlock(&h_mu);
}

static void
kh_life(void *a, size_t ops)
{
	struct scale *sc = a;
	struct hsrc s;
	for (size_t i = 0; i < ops; i++) {
		s.armed = 0; /* init */
		h_arm(&s, now_ns() + 30 * SEC + rnd(&sc->x) % (60 * SEC));
		h_disarm(&s); /* destroy */
	}
}

static void
kh_later(void *a, size_t ops)
{
	struct scale *sc = a;
	for (size_t i = 0; i < ops; i++)
		h_arm(&sc->hs[rnd(&sc->x) % sc->n],
		      now_ns() + 90 * SEC + (i & 1023));
}

static void
kh_random(void *a, size_t ops)
{
	struct scale *sc = a;
	for (size_t i = 0; i < ops; i++) {
		uint64_t r = rnd(&sc->x);
		h_arm(&sc->hs[r % sc->n],
		      now_ns() + 30 * SEC + (r >> 20) % (60 * SEC));
	}
}

/* A burst's result: lateness quantiles, and the last fire's distance
 * from the last deadline. */
struct burst {
	double med_us, p99_us, max_us, tail_ms;
	bool ok;
};

static void
burst_result(struct burst *b, uint64_t *dl, uint64_t *at, size_t n)
{
	uint64_t last_dl = 0, last_at = 0;
	for (size_t i = 0; i < n; i++) {
		if (dl[i] > last_dl)
			last_dl = dl[i];
		if (at[i] > last_at)
			last_at = at[i];
		at[i] = at[i] > dl[i] ? at[i] - dl[i] : 0;
	}
	b->med_us = (double)quantile(at, n, 0.5) / 1000.0;
	b->p99_us = (double)quantile(at, n, 0.99) / 1000.0;
	b->max_us = (double)at[n - 1] / 1000.0;
	b->tail_ms = (double)(last_at - last_dl) / 1e6;
	b->ok = true;
}

/*
 * The burst's record: each callback appends (source index, time) to a log
 * in firing order, and the results are scattered by index afterwards. A
 * write to at[index] in the callback would be a cache miss at a random
 * line (8 MB at N = 1,000,000), and the library's next locked instruction
 * waits for it: at N = 1,000,000 the tail was 388-508 ms with those
 * writes against 249-404 ms with the log (the same library, alternated).
 * The log's writes are sequential and stay hot. The heap's firing thread
 * records the same way.
 */
struct burst_rec {
	uint64_t at;
	size_t i;
};

static struct burst_rec *burst_log;
static size_t burst_pos, burst_fired;

static void
burst_fn(void *arg)
{
	size_t k = __atomic_fetch_add(&burst_pos, 1, __ATOMIC_RELAXED);
	burst_log[k].at = now_ns();
	burst_log[k].i = (size_t)(uintptr_t)arg;
	/* Release pairs with burst_wait()'s acquire: the record is seen. */
	__atomic_fetch_add(&burst_fired, 1, __ATOMIC_RELEASE);
}

/* Wait until @n fired (or 30 s past @last). */
static bool
burst_wait(size_t n, uint64_t last)
{
	struct timespec ts = {0, 5 * (long)MS};
	while (__atomic_load_n(&burst_fired, __ATOMIC_ACQUIRE) < n) {
		if (now_ns() > last + 30 * SEC)
			return false;
		nanosleep(&ts, NULL);
	}
	return true;
}

/* Deadlines of a burst: random over BURST_NS, after a head start for the
 * arming (scaled with n). */
static uint64_t
burst_deadlines(uint64_t *dl, size_t n, uint64_t *x)
{
	uint64_t base = now_ns() + 100 * MS + (uint64_t)n * 1000;
	uint64_t last = 0;
	for (size_t i = 0; i < n; i++) {
		dl[i] = base + rnd(x) % BURST_NS;
		if (dl[i] > last)
			last = dl[i];
	}
	return last;
}

static void
burst_lib(struct burst *b, size_t n, uint64_t *x)
{
	struct cancel_source *s = calloc(n, sizeof(*s));
	struct cancel_callback *cb = calloc(n, sizeof(*cb));
	uint64_t *dl = calloc(n, sizeof(*dl));
	uint64_t *at = calloc(n, sizeof(*at));
	burst_log = malloc(n * sizeof(*burst_log));
	b->ok = false;
	if (s == NULL || cb == NULL || dl == NULL || at == NULL ||
	    burst_log == NULL)
		goto out;
	/* Touch the log's pages now, not in the callbacks (not with zeros:
	 * the compiler may turn malloc + memset 0 into calloc). */
	memset(burst_log, 0xff, n * sizeof(*burst_log));
	for (size_t i = 0; i < n; i++)
		cancel_callback_register(&cb[i], burst_fn, (void *)(uintptr_t)i,
		                         cancel_source_token(&s[i]));
	__atomic_store_n(&burst_pos, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&burst_fired, 0, __ATOMIC_RELAXED);
	uint64_t last = burst_deadlines(dl, n, x);
	for (size_t i = 0; i < n; i++) {
		struct timespec ts = to_ts(dl[i]);
		cancel_source_cancel_at(&s[i], &ts);
	}
	if (burst_wait(n, last)) {
		for (size_t k = 0; k < n; k++)
			at[burst_log[k].i] = burst_log[k].at;
		burst_result(b, dl, at, n);
	}
	for (size_t i = 0; i < n; i++) {
		cancel_callback_unregister(&cb[i]);
		if (cancel_source_destroy(&s[i]) != 0)
			abort();
	}
out:
	free(s);
	free(cb);
	free(dl);
	free(at);
	free(burst_log);
	burst_log = NULL;
}

struct hburst {
	struct burst_rec *log; /* as the library's burst records */
	struct hsrc *base;
	size_t n;
};

/* The heap's firing thread: the old run_timers loop without the cancel. */
static void *
h_fire_main(void *arg)
{
	struct hburst *hb = arg;
	size_t done = 0;
	pthread_mutex_lock(&h_mu);
	while (done < hb->n) {
		struct hsrc *r = h_root;
		if (r->deadline <= now_ns()) {
			h_remove(r);
			pthread_mutex_unlock(&h_mu);
			hb->log[done].at = now_ns();
			hb->log[done].i = (size_t)(r - hb->base);
			done++;
			pthread_mutex_lock(&h_mu);
			continue;
		}
		struct timespec ts = to_ts(r->deadline);
		pthread_mutex_unlock(&h_mu);
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		pthread_mutex_lock(&h_mu);
	}
	pthread_mutex_unlock(&h_mu);
	return NULL;
}

static void
burst_heap(struct burst *b, size_t n, uint64_t *x)
{
	struct hsrc *s = calloc(n, sizeof(*s));
	uint64_t *dl = calloc(n, sizeof(*dl));
	uint64_t *at = calloc(n, sizeof(*at));
	struct burst_rec *log = malloc(n * sizeof(*log));
	pthread_t t;
	b->ok = false;
	if (s == NULL || dl == NULL || at == NULL || log == NULL)
		goto out;
	memset(log, 0xff, n * sizeof(*log)); /* as burst_lib's */
	burst_deadlines(dl, n, x);
	for (size_t i = 0; i < n; i++)
		h_arm(&s[i], dl[i]);
	struct hburst hb = {log, s, n};
	if (pthread_create(&t, NULL, h_fire_main, &hb) != 0)
		goto out;
	pthread_join(t, NULL);
	for (size_t k = 0; k < n; k++)
		at[log[k].i] = log[k].at;
	burst_result(b, dl, at, n);
out:
	free(s);
	free(dl);
	free(at);
	free(log);
}

/* 2 threads re-arming their own sources against 1. */
struct own {
	struct cancel_source srcs[1000];
	uint64_t x;
	bool later;
	pthread_barrier_t *bar;
	double ns;
};

static void *
own_main(void *arg)
{
	struct own *o = arg;
	for (size_t i = 0; i < 1000; i++)
		cancel_source_cancel_after(&o->srcs[i], 30 * SEC + i * MS);
	pthread_barrier_wait(o->bar);
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < SCALE_OPS; i++) {
		uint64_t r = rnd(&o->x);
		uint64_t ns = o->later ? 90 * SEC + (i & 1023)
		                       : 30 * SEC + (r >> 20) % (60 * SEC);
		cancel_source_cancel_after(&o->srcs[r % 1000], ns);
	}
	o->ns = (double)(now_ns() - t0) / SCALE_OPS;
	for (size_t i = 0; i < 1000; i++)
		if (cancel_source_destroy(&o->srcs[i]) != 0)
			abort();
	return NULL;
}

/* Median over SCALE_RUNS of the mean ns per re-arm per thread. */
static double
own_rearm(int nthreads, bool later)
{
	double per[SCALE_RUNS];
	for (int r = 0; r < SCALE_RUNS; r++) {
		pthread_barrier_t bar;
		pthread_t t[2];
		struct own *o = calloc(2, sizeof(*o));
		if (o == NULL)
			return -1;
		pthread_barrier_init(&bar, NULL, (unsigned)nthreads);
		for (int i = 0; i < nthreads; i++) {
			o[i].x = 88172645463325252ull + (uint64_t)i;
			o[i].later = later;
			o[i].bar = &bar;
			pthread_create(&t[i], NULL, own_main, &o[i]);
		}
		double sum = 0;
		for (int i = 0; i < nthreads; i++) {
			pthread_join(t[i], NULL);
			sum += o[i].ns;
		}
		pthread_barrier_destroy(&bar);
		free(o);
		per[r] = sum / nthreads;
	}
	/* insertion sort, then the middle */
	for (int i = 1; i < SCALE_RUNS; i++)
		for (int j = i; j > 0 && per[j] < per[j - 1]; j--) {
			double t = per[j];
			per[j] = per[j - 1];
			per[j - 1] = t;
		}
	return per[SCALE_RUNS / 2];
}

static int
scale_bench(size_t max_n)
{
	static const size_t ns[] = {1000, 100000, 1000000};
	uint64_t x = 0x9e3779b97f4a7c15ull;

	printf("\ntimer at scale: N sources armed 30-90 s ahead (median of "
	       "%d runs x %d ops;\nwheel = the library, heap = bench-local "
	       "pairing heap as before)\n", SCALE_RUNS, SCALE_OPS);
	printf("  %-30s %10s %10s %10s\n", "ns per op", "N=1,000",
	       "N=100,000", "N=1,000,000");
	double v[11][3];
	struct burst bw[3], bh[3];
	int cols = 0;
	for (int c = 0; c < 3 && ns[c] <= max_n; c++, cols++) {
		size_t n = ns[c];
		struct scale sc = {0};
		sc.n = n;
		sc.x = x + (uint64_t)c;
		sc.srcs = calloc(n, sizeof(*sc.srcs));
		sc.hs = calloc(n, sizeof(*sc.hs));
		sc.shadow = calloc(n, sizeof(*sc.shadow));
		if (sc.srcs == NULL || sc.hs == NULL || sc.shadow == NULL)
			return 1;
		/* Fault the shadow's pages in now, as arming does srcs'. */
		for (size_t k = 0; k < n * sizeof(*sc.shadow); k += 4096)
			((volatile char *)sc.shadow)[k] = 0;
		uint64_t t = now_ns();
		for (size_t i = 0; i < n; i++) {
			uint64_t d = 30 * SEC + rnd(&sc.x) % (60 * SEC);
			cancel_source_cancel_after(&sc.srcs[i], d);
			h_arm(&sc.hs[i], t + d);
		}
		v[0][c] = med_ns(k_floor, &sc);
		v[1][c] = med_ns(k_life, &sc);
		v[2][c] = med_ns(kh_life, &sc);
		v[3][c] = med_ns(k_later, &sc);
		v[4][c] = med_ns(kh_later, &sc);
		v[5][c] = med_ns(k_random, &sc);
		v[6][c] = med_ns(kh_random, &sc);
		v[7][c] = v[3][c] / v[0][c];
		v[8][c] = v[5][c] / v[0][c];
		v[9][c] = med_ns(k_clock_touch, &sc);
		v[10][c] = v[3][c] / v[9][c];
		for (size_t i = 0; i < n; i++) {
			if (cancel_source_destroy(&sc.srcs[i]) != 0)
				abort();
			h_disarm(&sc.hs[i]);
		}
		free(sc.srcs);
		free(sc.hs);
		free(sc.shadow);
		burst_lib(&bw[c], n, &x);
		burst_heap(&bh[c], n, &x);
	}
	static const char *names[11] = {
		"random-touch floor", "lifecycle init+arm+destroy",
		"  heap", "re-arm random, later", "  heap",
		"re-arm random, 30-90 s", "  heap",
		"re-arm later / floor (x)", "re-arm 30-90 s / floor (x)",
		"clock read + touch (by hand)", "re-arm later / that (x)"};
	for (int r = 0; r < 11; r++) {
		printf("  %-30s", names[r]);
		for (int c = 0; c < cols; c++)
			printf(" %10.1f", v[r][c]);
		printf("\n");
	}
	printf("burst of N deadlines over 100 ms: lateness (median / p99 / "
	       "max us; last fire after last deadline, ms)\n");
	for (int c = 0; c < cols; c++) {
		printf("  N=%-8zu wheel ", ns[c]);
		if (bw[c].ok)
			printf("%9.1f %9.1f %10.1f  %8.2f ms\n", bw[c].med_us,
			       bw[c].p99_us, bw[c].max_us, bw[c].tail_ms);
		else
			printf("did not all fire\n");
		printf("  %-10s heap  %9.1f %9.1f %10.1f  %8.2f ms\n", "",
		       bh[c].med_us, bh[c].p99_us, bh[c].max_us, bh[c].tail_ms);
	}
	double one_l = own_rearm(1, true), two_l = own_rearm(2, true);
	double one_r = own_rearm(1, false), two_r = own_rearm(2, false);
	printf("re-arm own sources (1,000 each), ns per op per thread\n");
	printf("  %-30s %10s %10s\n", "", "1 thread", "2 threads");
	printf("  %-30s %10.1f %10.1f\n", "later", one_l, two_l);
	printf("  %-30s %10.1f %10.1f\n", "30-90 s ahead", one_r, two_r);
	return 0;
}

int
main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 2000;
	if (n < 100)
		n = 100;
	size_t max_n = argc > 2 ? strtoul(argv[2], NULL, 0)
	                        : n < 1000 ? 100000 : 1000000;

	if (cancel_signal_prepare() != 0) {
		fprintf(stderr, "bench_timer: library thread did not start\n");
		return 1;
	}

	/* Arm + disarm. */
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	double alone = arm_disarm_ns(&src);
	double rearm_alone = rearm_ns(&src);
	double kick = rearm_kick_ns(&src);
	struct cancel_source *others = calloc(OTHERS, sizeof(*others));
	if (others == NULL)
		return 1;
	uint64_t base = now_ns() + 600 * SEC;
	for (size_t i = 0; i < OTHERS; i++) {
		/* Earlier than the measured arm: it never becomes the root,
		 * so the library thread is never woken. */
		struct timespec dl = to_ts(base + i * 1000);
		cancel_source_init(&others[i]);
		cancel_source_cancel_at(&others[i], &dl);
	}
	double crowded = arm_disarm_ns(&src);
	double rearm_crowded = rearm_ns(&src);
	int busy = 0;
	for (size_t i = 0; i < OTHERS; i++)
		busy |= cancel_source_destroy(&others[i]);
	free(others);
	busy |= cancel_source_destroy(&src);
	if (busy != 0) {
		fprintf(stderr, "bench_timer: destroy failed\n");
		return 1;
	}

	printf("timer arm/disarm (median of %d runs x %d ops)\n", RUNS, OPS);
	printf("  %-44s %8.1f ns\n", "arm+disarm, no other timer", alone);
	printf("  %-44s %8.1f ns\n", "re-arm, no other timer", rearm_alone);
	printf("  %-44s %8.1f ns\n", "re-arm earlier each time (wakes thread)",
	       kick);
	printf("  %-44s %8.1f ns\n", "arm+disarm, 10,000 earlier armed",
	       crowded);
	printf("  %-44s %8.1f ns\n", "re-arm, 10,000 earlier armed",
	       rearm_crowded);

	/* Lateness, interleaved: timer, raw sleep, raw sleep with 1 ns
	 * slack (what the library thread asks for). */
	uint64_t *lt = calloc(n, sizeof(*lt));
	uint64_t *sl = calloc(n, sizeof(*sl));
	uint64_t *s1 = calloc(n, sizeof(*s1));
	if (lt == NULL || sl == NULL || s1 == NULL)
		return 1;
	struct fire f;
	pthread_condattr_t ca;
	pthread_mutex_init(&f.mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f.cv, &ca);
	pthread_condattr_destroy(&ca);
	for (size_t i = 0; i < n; i++) {
		uint64_t gap = 1 * MS + (i * 7919 % 500) * 1000;
		if (timer_sample(&f, now_ns() + gap, &lt[i]) != 0) {
			fprintf(stderr, "bench_timer: timer did not fire\n");
			return 1;
		}
#ifdef PR_SET_TIMERSLACK
		prctl(PR_SET_TIMERSLACK, 0ul, 0ul, 0ul, 0ul); /* default */
#endif
		sl[i] = sleep_sample(now_ns() + gap);
#ifdef PR_SET_TIMERSLACK
		prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
#endif
		s1[i] = sleep_sample(now_ns() + gap);
	}
#ifdef PR_SET_TIMERSLACK
	prctl(PR_SET_TIMERSLACK, 0ul, 0ul, 0ul, 0ul);
#endif
	printf("fire lateness, deadline to callback start (%zu samples, "
	       "1-1.5 ms ahead)\n", n);
	printf("  %-36s %10s %10s %10s\n", "", "median us", "p99 us",
	       "max us");
	row("cancel_source_cancel_at (lib thread)", lt, n);
	row("clock_nanosleep, default slack", sl, n);
	row("clock_nanosleep, 1 ns slack", s1, n);
	free(lt);
	free(sl);
	free(s1);
	pthread_cond_destroy(&f.cv);
	pthread_mutex_destroy(&f.mu);
	return scale_bench(max_n);
}
