/*
 * bench_timer: the cost of arming and disarming a source's timer, and how
 * late the library thread fires (deadline to callback start) next to raw
 * clock_nanosleep(TIMER_ABSTIME) lateness measured in the same run, the
 * samples interleaved so both see the same machine load.
 *
 * Usage: bench_timer [samples]   (default 2000, at least 100)
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

int
main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 2000;
	if (n < 100)
		n = 100;

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
	return 0;
}
