/*
 * cancel_source_cancel_after() / cancel_source_cancel_at(): the timer on
 * the library thread. Fires are observed through a registered callback
 * that signals a CLOCK_MONOTONIC condvar; "did not fire" is checked past
 * the deadline using a second, later-armed source as the clock.
 */
/* ctest: TIMING */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cancel.h"
#include "internal.h"
#include "testutil.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* Children start the library thread again after fork(). */
TU_THREADS_AFTER_FORK

/* ------------------------------------------------------------------ */
/* A probe: a callback that records its run and signals a condvar.    */
/* ------------------------------------------------------------------ */

struct probe {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct cancel_source *src;
	struct cancel_callback cb;
	int count;
	int reason;
	bool on_lt;
	pthread_t thread;
	uint64_t at_ns;
};

static void
probe_fn(void *arg)
{
	struct probe *p = arg;
	uint64_t now = tu_now_ns();
	int reason = cancel_token_reason(cancel_source_token(p->src));

	pthread_mutex_lock(&p->mu);
	p->count++;
	p->reason = reason;
	p->on_lt = cancel__lt_is_self();
	p->thread = pthread_self();
	p->at_ns = now;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void
probe_init(struct probe *p, struct cancel_source *src)
{
	pthread_condattr_t ca;

	memset(p, 0, sizeof(*p));
	p->src = src;
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	cancel_callback_register(&p->cb, probe_fn, p,
	                         cancel_source_token(src));
}

/* Wait until the probe ran at least once or @timeout_ns passed. */
static bool
probe_wait(struct probe *p, uint64_t timeout_ns)
{
	struct timespec dl;
	uint64_t end = tu_now_ns() + timeout_ns;

	dl.tv_sec = (time_t)(end / SEC);
	dl.tv_nsec = (long)(end % SEC);
	pthread_mutex_lock(&p->mu);
	while (p->count == 0) {
		if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) == ETIMEDOUT)
			break;
	}
	bool ran = p->count != 0;
	pthread_mutex_unlock(&p->mu);
	return ran;
}

static int
probe_count(struct probe *p)
{
	pthread_mutex_lock(&p->mu);
	int n = p->count;
	pthread_mutex_unlock(&p->mu);
	return n;
}

static void
probe_fini(struct probe *p)
{
	cancel_callback_unregister(&p->cb);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
}

/* Arm a fresh clock source @ns from now and wait until it fired. */
static void
wait_clock(uint64_t ns)
{
	struct cancel_source clk = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &clk);
	assert_int_equal(cancel_source_cancel_after(&clk, ns), 0);
	assert_true(probe_wait(&p, ns + 5 * SEC));
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&clk), 0);
}

static int fds_at_start;
/* Signalled by every order_fn run; CLOCK_MONOTONIC (group_setup). */
static pthread_cond_t order_cv;

static int
group_setup(void **state)
{
	(void)state;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&order_cv, &ca);
	pthread_condattr_destroy(&ca);
	/* The library thread's wake descriptor is opened once, here. */
	if (cancel_signal_prepare() != 0)
		return -1;
	fds_at_start = tu_fd_count();
	return 0;
}

/* ------------------------------------------------------------------ */
/* Basic firing                                                       */
/* ------------------------------------------------------------------ */

static void
cancel_after_fires_with_etimedout_within_bounds(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &s);
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_source_cancel_after(&s, 50 * MS), 0);
	assert_true(probe_wait(&p, 3 * SEC));
	uint64_t el = p.at_ns - t0;
	assert_true(el >= 45 * MS);
	assert_true(el < 2 * SEC);
	assert_int_equal(p.reason, ETIMEDOUT);
	assert_int_equal(cancel_token_reason(cancel_source_token(&s)),
	                 ETIMEDOUT);
	assert_int_equal(probe_count(&p), 1);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
timer_callback_runs_on_library_thread(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &s);
	assert_false(cancel__lt_is_self());
	assert_int_equal(cancel_source_cancel_after(&s, 1 * MS), 0);
	assert_true(probe_wait(&p, 3 * SEC));
	assert_false(pthread_equal(p.thread, pthread_self()));
	assert_true(p.on_lt);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
cancel_at_reports_deadline_and_fires_not_before_it(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &s);
	assert_true(cancel__timer_deadline(&s) == CANCEL_NEVER);
	struct timespec dl = cancel_deadline_in(40 * MS);
	uint64_t d = (uint64_t)dl.tv_sec * SEC + (uint64_t)dl.tv_nsec;
	assert_int_equal(cancel_source_cancel_at(&s, &dl), 0);
	assert_true(cancel__timer_deadline(&s) == d);
	assert_true(probe_wait(&p, 3 * SEC));
	assert_true(p.at_ns >= d);
	assert_true(p.at_ns - d < 2 * SEC);
	assert_int_equal(p.reason, ETIMEDOUT);
	assert_true(cancel__timer_deadline(&s) == CANCEL_NEVER);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
cancel_at_past_deadline_fires_at_once_on_library_thread(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct probe p;
	struct timespec past = {0, 1};

	probe_init(&p, &s);
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_source_cancel_at(&s, &past), 0);
	assert_true(probe_wait(&p, 3 * SEC));
	assert_true(p.at_ns - t0 < 2 * SEC);
	assert_true(p.on_lt);
	assert_int_equal(p.reason, ETIMEDOUT);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

/* ------------------------------------------------------------------ */
/* Re-arming and disarming                                            */
/* ------------------------------------------------------------------ */

static void
rearm_earlier_fires_at_the_new_deadline(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &s);
	assert_int_equal(cancel_source_cancel_after(&s, 10 * SEC), 0);
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_source_cancel_after(&s, 50 * MS), 0);
	assert_true(cancel__timer_deadline(&s) < t0 + 1 * SEC);
	assert_true(probe_wait(&p, 3 * SEC));
	assert_true(p.at_ns - t0 >= 45 * MS);
	assert_true(p.at_ns - t0 < 2 * SEC);
	assert_int_equal(p.reason, ETIMEDOUT);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
rearm_later_does_not_fire_at_the_first_deadline(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &s);
	assert_int_equal(cancel_source_cancel_after(&s, 50 * MS), 0);
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_source_cancel_after(&s, 600 * MS), 0);
	wait_clock(200 * MS);
	if (tu_now_ns() - t0 < 550 * MS) {
		/* Past the first deadline, before the second. */
		assert_int_equal(probe_count(&p), 0);
		assert_false(cancel_token_is_canceled(cancel_source_token(&s)));
	}
	assert_true(probe_wait(&p, 5 * SEC));
	assert_true(p.at_ns - t0 >= 590 * MS);
	assert_true(p.at_ns - t0 < 3 * SEC);
	assert_int_equal(p.reason, ETIMEDOUT);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
disarm_with_never_or_null_prevents_the_fire(void **state)
{
	(void)state;
	struct cancel_source a = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source b = CANCEL_SOURCE_INITIALIZER;
	struct probe pa, pb;

	probe_init(&pa, &a);
	probe_init(&pb, &b);
	assert_int_equal(cancel_source_cancel_after(&a, 30 * MS), 0);
	assert_int_equal(cancel_source_cancel_after(&b, 30 * MS), 0);
	assert_int_equal(cancel_source_cancel_after(&a, CANCEL_NEVER), 0);
	assert_int_equal(cancel_source_cancel_at(&b, NULL), 0);
	assert_true(cancel__timer_deadline(&a) == CANCEL_NEVER);
	assert_true(cancel__timer_deadline(&b) == CANCEL_NEVER);
	/* Disarming twice, or a never-armed source, is harmless. */
	assert_int_equal(cancel_source_cancel_after(&a, CANCEL_NEVER), 0);
	wait_clock(150 * MS);
	assert_int_equal(probe_count(&pa), 0);
	assert_int_equal(probe_count(&pb), 0);
	assert_false(cancel_token_is_canceled(cancel_source_token(&a)));
	assert_false(cancel_token_is_canceled(cancel_source_token(&b)));
	probe_fini(&pa);
	probe_fini(&pb);
	assert_int_equal(cancel_source_destroy(&a), 0);
	assert_int_equal(cancel_source_destroy(&b), 0);
}

static void
saturating_duration_arms_nothing(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;

	assert_int_equal(cancel_source_cancel_after(&s, 10 * SEC), 0);
	assert_int_equal(cancel_source_cancel_after(&s, CANCEL_NEVER - 1), 0);
	assert_true(cancel__timer_deadline(&s) == CANCEL_NEVER);
	struct timespec far = cancel_deadline_in(CANCEL_NEVER);
	assert_int_equal(cancel_source_cancel_at(&s, &far), 0);
	assert_true(cancel__timer_deadline(&s) == CANCEL_NEVER);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
cancel_before_deadline_keeps_ecanceled_and_one_callback(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &s);
	assert_int_equal(cancel_source_cancel_after(&s, 30 * MS), 0);
	assert_true(cancel_source_cancel(&s));
	assert_int_equal(probe_count(&p), 1);
	assert_true(pthread_equal(p.thread, pthread_self()));
	wait_clock(150 * MS);
	assert_int_equal(probe_count(&p), 1);
	assert_int_equal(p.reason, ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_source_token(&s)),
	                 ECANCELED);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
cancel_after_on_canceled_source_is_a_successful_noop(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct timespec dl = cancel_deadline_in(10 * MS);

	assert_true(cancel_source_cancel(&s));
	assert_int_equal(cancel_source_cancel_after(&s, 10 * MS), 0);
	assert_int_equal(cancel_source_cancel_at(&s, &dl), 0);
	assert_int_equal(cancel_source_cancel_after(&s, CANCEL_NEVER), 0);
	assert_true(cancel__timer_deadline(&s) == CANCEL_NEVER);
	assert_int_equal(cancel_token_reason(cancel_source_token(&s)),
	                 ECANCELED);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
bad_arguments_return_einval_and_arm_nothing(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct timespec ok = cancel_deadline_in(10 * MS);
	struct timespec bad[] = {{0, -1}, {0, 1000000000}, {-1, 0}};

	assert_int_equal(cancel_source_cancel_after(NULL, 10 * MS), EINVAL);
	assert_int_equal(cancel_source_cancel_at(NULL, &ok), EINVAL);
	assert_int_equal(cancel_source_cancel_at(NULL, NULL), EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cancel_source_cancel_at(&s, &bad[i]), EINVAL);
		assert_true(cancel__timer_deadline(&s) == CANCEL_NEVER);
	}
	/* A malformed re-arm leaves the existing deadline alone. */
	assert_int_equal(cancel_source_cancel_at(&s, &ok), 0);
	assert_int_equal(cancel_source_cancel_at(&s, &bad[0]), EINVAL);
	assert_true(cancel__timer_deadline(&s) ==
	            (uint64_t)ok.tv_sec * SEC + (uint64_t)ok.tv_nsec);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
timer_calls_leave_errno_unchanged(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct timespec ok = cancel_deadline_in(10 * SEC);
	struct timespec bad = {0, -1};

	errno = 7777;
	cancel_source_cancel_after(&s, 10 * SEC);
	cancel_source_cancel_after(&s, CANCEL_NEVER);
	cancel_source_cancel_at(&s, &ok);
	cancel_source_cancel_at(&s, &bad);
	cancel_source_cancel_at(&s, NULL);
	cancel_source_cancel_after(NULL, 1);
	cancel_signal_prepare();
	assert_int_equal(errno, 7777);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

/* ------------------------------------------------------------------ */
/* Links, destroy                                                     */
/* ------------------------------------------------------------------ */

static void
linked_child_of_timed_parent_gets_etimedout(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source child;
	struct probe p;
	cancel_token pt = cancel_source_token(&parent);

	assert_int_equal(cancel_source_init_linked(&child, &pt, 1), 0);
	probe_init(&p, &child);
	assert_int_equal(cancel_source_cancel_after(&parent, 30 * MS), 0);
	assert_true(probe_wait(&p, 3 * SEC));
	assert_int_equal(p.reason, ETIMEDOUT);
	assert_true(p.on_lt);
	assert_int_equal(cancel_token_reason(cancel_source_token(&parent)),
	                 ETIMEDOUT);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

static void
destroy_of_armed_source_disarms_it(void **state)
{
	(void)state;
	static struct cancel_source kept;
	struct cancel_source *freed = malloc(sizeof(*freed));

	assert_non_null(freed);
	cancel_source_init(&kept);
	cancel_source_init(freed);
	assert_int_equal(cancel_source_cancel_after(&kept, 30 * MS), 0);
	assert_int_equal(cancel_source_cancel_after(freed, 30 * MS), 0);
	assert_int_equal(cancel_source_destroy(&kept), 0);
	assert_int_equal(cancel_source_destroy(freed), 0);
	/* A fire on freed memory would be a use-after-free under ASan. */
	free(freed);
	wait_clock(150 * MS);
	/* Our own storage: still reads not canceled. */
	assert_true((__atomic_load_n(&kept.state_, __ATOMIC_ACQUIRE) & 1) ==
	            0);
	assert_true(cancel__timer_deadline(&kept) == CANCEL_NEVER);
}

/* A callback that destroys its own source on the library thread. */
struct self_destroy {
	struct cancel_source src;
	struct cancel_callback cb;
	int *rc;
	struct probe *done;
};

static void
self_destroy_fn(void *arg)
{
	struct self_destroy *sd = arg;
	struct probe *done = sd->done;
	int *rc = sd->rc;

	cancel_callback_unregister(&sd->cb);
	*rc = cancel_source_destroy(&sd->src);
	free(sd);
	pthread_mutex_lock(&done->mu);
	done->count++;
	pthread_cond_broadcast(&done->cv);
	pthread_mutex_unlock(&done->mu);
}

static void
callback_may_destroy_and_free_its_timed_source(void **state)
{
	(void)state;
	struct cancel_source dummy = CANCEL_SOURCE_INITIALIZER;
	struct probe done;
	int rc = -1;

	probe_init(&done, &dummy);
	for (int i = 0; i < 50; i++) {
		struct self_destroy *sd = calloc(1, sizeof(*sd));
		assert_non_null(sd);
		sd->rc = &rc;
		sd->done = &done;
		cancel_source_init(&sd->src);
		cancel_callback_register(&sd->cb, self_destroy_fn, sd,
		                         cancel_source_token(&sd->src));
		assert_int_equal(cancel_source_cancel_after(&sd->src,
		                                            (uint64_t)i * 1000),
		                 0);
		/* Wait for this round's callback (count reaches i + 1). */
		pthread_mutex_lock(&done.mu);
		uint64_t end = tu_now_ns() + 5 * SEC;
		struct timespec dl = {(time_t)(end / SEC), (long)(end % SEC)};
		while (done.count < i + 1 &&
		       pthread_cond_timedwait(&done.cv, &done.mu, &dl) == 0)
			;
		int n = done.count;
		pthread_mutex_unlock(&done.mu);
		assert_int_equal(n, i + 1);
		assert_int_equal(rc, 0);
	}
	probe_fini(&done);
	assert_int_equal(cancel_source_destroy(&dummy), 0);
}

/* ------------------------------------------------------------------ */
/* Many sources                                                       */
/* ------------------------------------------------------------------ */

struct item {
	struct cancel_source src;
	struct cancel_callback cb;
	uint64_t deadline;
	uint64_t fired_at;
	int fired;
};

static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t *order;
static size_t norder;
static struct item *items;

static void
order_fn(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	uint64_t now = tu_now_ns();

	pthread_mutex_lock(&order_mu);
	items[i].fired++;
	items[i].fired_at = now;
	order[norder++] = i;
	pthread_cond_broadcast(&order_cv);
	pthread_mutex_unlock(&order_mu);
}

static uint64_t
xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Wait (CLOCK_MONOTONIC condvar) until @n callbacks ran or time is up. */
static size_t
wait_order_count(size_t n, uint64_t timeout_ns)
{
	uint64_t end = tu_now_ns() + timeout_ns;
	struct timespec dl = {(time_t)(end / SEC), (long)(end % SEC)};

	pthread_mutex_lock(&order_mu);
	while (norder < n &&
	       pthread_cond_timedwait(&order_cv, &order_mu, &dl) == 0)
		;
	size_t got = norder;
	pthread_mutex_unlock(&order_mu);
	return got;
}

static void
ten_thousand_timers_fire_once_in_deadline_order(void **state)
{
	(void)state;
	const size_t n = 10000;
	uint64_t x = tu_seed("ten_thousand_timers") | 1u;

	items = calloc(n, sizeof(*items));
	order = calloc(n, sizeof(*order));
	assert_non_null(items);
	assert_non_null(order);
	norder = 0;

	/* Deadlines start after arming is done, so order is meaningful. */
	uint64_t base = tu_now_ns() + 400 * MS;
	for (size_t i = 0; i < n; i++) {
		items[i].deadline = base + xorshift(&x) % (300 * MS);
		cancel_source_init(&items[i].src);
		cancel_callback_register(&items[i].cb, order_fn,
		                         (void *)(uintptr_t)i,
		                         cancel_source_token(&items[i].src));
	}
	for (size_t i = 0; i < n; i++) {
		struct timespec dl = {(time_t)(items[i].deadline / SEC),
		                      (long)(items[i].deadline % SEC)};
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	bool in_time = tu_now_ns() < base;
	if (!in_time)
		fprintf(stderr, "arming took past the first deadline: "
		                "checking exactly-once only\n");

	assert_true(wait_order_count(n, 20 * SEC) == n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(items[i].fired, 1);
		assert_true(items[i].fired_at >= items[i].deadline);
		assert_int_equal(cancel_token_reason(cancel_source_token(
		                         &items[i].src)),
		                 ETIMEDOUT);
	}
	if (in_time) {
		for (size_t k = 1; k < n; k++)
			assert_true(items[order[k - 1]].deadline <=
			            items[order[k]].deadline);
	}
	for (size_t i = 0; i < n; i++) {
		cancel_callback_unregister(&items[i].cb);
		assert_int_equal(cancel_source_destroy(&items[i].src), 0);
	}
	free(order);
	free(items);
	order = NULL;
	items = NULL;
}

static void
hundred_thousand_armed_sources_disarm_and_fire(void **state)
{
	(void)state;
	const size_t n = 100000;
	uint64_t x = tu_seed("hundred_thousand") | 1u;

	items = calloc(n, sizeof(*items));
	order = calloc(n, sizeof(*order));
	size_t *perm = calloc(n, sizeof(*perm));
	assert_non_null(items);
	assert_non_null(order);
	assert_non_null(perm);
	norder = 0;

	uint64_t far = tu_now_ns() + 3600 * SEC;
	uint64_t min = CANCEL_NEVER;
	for (size_t i = 0; i < n; i++) {
		perm[i] = i;
		items[i].deadline = far + xorshift(&x) % (3600 * SEC);
		if (items[i].deadline < min)
			min = items[i].deadline;
		cancel_source_init(&items[i].src);
		cancel_callback_register(&items[i].cb, order_fn,
		                         (void *)(uintptr_t)i,
		                         cancel_source_token(&items[i].src));
		struct timespec dl = {(time_t)(items[i].deadline / SEC),
		                      (long)(items[i].deadline % SEC)};
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)(xorshift(&x) % (i + 1));
		size_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	/* Disarm the first half of a random permutation... */
	for (size_t k = 0; k < n / 2; k++) {
		struct item *it = &items[perm[k]];
		assert_true(cancel__timer_deadline(&it->src) == it->deadline);
		assert_int_equal(cancel_source_cancel_after(&it->src,
		                                            CANCEL_NEVER),
		                 0);
	}
	/* ...and make the rest due now, in another order. */
	struct timespec past = {0, 0};
	for (size_t k = n; k > n / 2; k--)
		assert_int_equal(
			cancel_source_cancel_at(&items[perm[k - 1]].src, &past),
			0);
	assert_true(wait_order_count(n - n / 2, 30 * SEC) == n - n / 2);
	wait_clock(20 * MS);
	assert_true(wait_order_count(n, 0) == n - n / 2);
	for (size_t k = 0; k < n; k++) {
		struct item *it = &items[perm[k]];
		assert_int_equal(it->fired, k < n / 2 ? 0 : 1);
		cancel_callback_unregister(&it->cb);
		assert_int_equal(cancel_source_destroy(&it->src), 0);
	}
	free(perm);
	free(order);
	free(items);
	order = NULL;
	items = NULL;
}

/* ------------------------------------------------------------------ */
/* Timer versus destroy                                               */
/* ------------------------------------------------------------------ */

struct round {
	struct cancel_source src;
	struct cancel_callback cb;
};

static unsigned long destroyed_upto;
static unsigned long late_calls;
static unsigned long race_calls;

static void
race_fn(void *arg)
{
	unsigned long idx = (unsigned long)(uintptr_t)arg;

	__atomic_fetch_add(&race_calls, 1, __ATOMIC_RELAXED);
	/* Acquire pairs with the test's release store after destroy. */
	if (__atomic_load_n(&destroyed_upto, __ATOMIC_ACQUIRE) >= idx)
		__atomic_fetch_add(&late_calls, 1, __ATOMIC_RELAXED);
}

static void
tiny_deadline_then_destroy_never_touches_freed_source(void **state)
{
	(void)state;
	long rounds = tu_rounds(20000, 100000);
	unsigned long fired = 0;

	destroyed_upto = late_calls = race_calls = 0;
	for (long i = 1; i <= rounds; i++) {
		struct round *r = malloc(sizeof(*r));
		assert_non_null(r);
		cancel_source_init(&r->src);
		memset(&r->cb, 0, sizeof(r->cb));
		bool with_cb = (i & 1) != 0;
		if (with_cb)
			cancel_callback_register(&r->cb, race_fn,
			                         (void *)(uintptr_t)i,
			                         cancel_source_token(&r->src));
		uint64_t ns = (i % 4 == 0) ? 0 : (uint64_t)(i % 64) * 500;
		assert_int_equal(cancel_source_cancel_after(&r->src, ns), 0);
		/* Spin 0-60 us so destroy lands before, during and after
		 * the fire (a busy wait on purpose: no sleep). */
		uint64_t until = tu_now_ns() + (uint64_t)((i * 7919) % 61) *
		                                       1000;
		while (tu_now_ns() < until)
			;
		if (with_cb)
			cancel_callback_unregister(&r->cb);
		if (cancel_token_is_canceled(cancel_source_token(&r->src)))
			fired++;
		assert_int_equal(cancel_source_destroy(&r->src), 0);
		/* Release pairs with race_fn's acquire load. */
		__atomic_store_n(&destroyed_upto, (unsigned long)i,
		                 __ATOMIC_RELEASE);
		memset(r, 0xa5, sizeof(*r));
		free(r);
	}
	/* Let a stray fire (there must be none) show itself. */
	wait_clock(10 * MS);
	fprintf(stderr, "%ld rounds: %lu canceled before destroy, %lu "
	                "callbacks ran\n", rounds, fired,
	        __atomic_load_n(&race_calls, __ATOMIC_RELAXED));
	assert_int_equal(__atomic_load_n(&late_calls, __ATOMIC_RELAXED), 0);
}

/*
 * destroy() on another thread while the library thread fires its
 * timeout: its disarm must wait for the end of that firing (counted in
 * firing_waiters, woken through lt_cv under lt_mu: tests/model/timer.pml).
 * The fire hook holds the library thread, with the firing in progress,
 * until the destroy waits for it:
 *   - before the cancel: the source still reads not canceled, no callback
 *     registered (destroy's armed-only path), and the cancel that follows
 *     must not touch freed memory;
 *   - after the cancel returned: its callback ran, the source reads
 *     canceled and done (destroy's full path).
 * The source and its callback are poisoned and freed the moment destroy
 * returns.
 */
struct held_firing {
	struct cancel_source src;
	struct cancel_callback cb;
};

static bool hold_after;      /* hold after the cancel, else before */
static int firing_held;      /* the hook holds the library thread */
static int firing_waited;    /* it saw the destroy waiting */
static int firing_released;  /* it returned */

static void
hold_firing_hook(bool after)
{
	if (after != __atomic_load_n(&hold_after, __ATOMIC_RELAXED) ||
	    __atomic_exchange_n(&firing_held, 1, __ATOMIC_ACQ_REL) != 0)
		return; /* only the first firing, at the chosen point */
	uint64_t end = tu_now_ns() + 30 * SEC;
	while (cancel__test_firing_waiters() == 0 && tu_now_ns() < end)
		sched_yield();
	if (cancel__test_firing_waiters() != 0)
		tu_signal(&firing_waited);
	tu_signal(&firing_released);
}

static void
count_fn(void *arg)
{
	__atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

static void
destroy_during_firing(bool after, bool with_cb)
{
	int ran = 0;
	struct held_firing *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	__atomic_store_n(&hold_after, after, __ATOMIC_RELAXED);
	__atomic_store_n(&firing_held, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&firing_waited, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&firing_released, 0, __ATOMIC_RELAXED);
	cancel__test_fire_hook(hold_firing_hook);

	cancel_source_init(&h->src);
	if (with_cb)
		assert_true(cancel_callback_register(
		        &h->cb, count_fn, &ran, cancel_source_token(&h->src)));
	assert_int_equal(cancel_source_cancel_after(&h->src, 1 * MS), 0);
	tu_await(&firing_held);
	if (with_cb)
		cancel_callback_unregister(&h->cb);
	/* Waits in its disarm until the hook lets the thread go on. */
	assert_int_equal(cancel_source_destroy(&h->src), 0);
	int released = __atomic_load_n(&firing_released, __ATOMIC_ACQUIRE);
	tu_poison(h, sizeof(*h));
	free(h);
	cancel__test_fire_hook(NULL);
	tu_await(&firing_released);
	assert_int_equal(released, 1);
	assert_int_equal(__atomic_load_n(&firing_waited, __ATOMIC_ACQUIRE), 1);
	assert_int_equal(__atomic_load_n(&ran, __ATOMIC_RELAXED),
	                 with_cb && after ? 1 : 0);
	assert_int_equal(cancel__test_firing_waiters(), 0);
}

static void
destroy_waits_for_a_firing_about_to_cancel_its_source(void **state)
{
	(void)state;
	destroy_during_firing(false, false);
}

static void
destroy_waits_for_the_end_of_a_firing_that_ran_its_callback(void **state)
{
	(void)state;
	destroy_during_firing(true, true);
}

/* ------------------------------------------------------------------ */
/* fork()                                                             */
/* ------------------------------------------------------------------ */

static void
forked_child_arms_a_timer_that_fires(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
		struct probe p;
		probe_init(&p, &s);
		int rc = cancel_source_cancel_after(&s, 20 * MS);
		bool ok = rc == 0 && probe_wait(&p, 5 * SEC) &&
		          p.reason == ETIMEDOUT && p.on_lt;
		_exit(ok ? 0 : 1);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
parent_armed_deadline_does_not_fire_in_child(void **state)
{
	(void)state;
	struct cancel_source a = CANCEL_SOURCE_INITIALIZER;
	struct probe p;

	probe_init(&p, &a);
	assert_int_equal(cancel_source_cancel_after(&a, 100 * MS), 0);
	uint64_t d = cancel__timer_deadline(&a);
	assert_true(d != CANCEL_NEVER);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int bad = 0;
		if (cancel__timer_deadline(&a) != CANCEL_NEVER)
			bad |= 2;
		/* Disarming the inherited source is safe (and a no-op). */
		cancel__timer_disarm(&a);
		struct cancel_source clk = CANCEL_SOURCE_INITIALIZER;
		struct probe pc;
		probe_init(&pc, &clk);
		/* The clock outlives the parent's deadline by far. */
		if (cancel_source_cancel_after(&clk, 400 * MS) != 0 ||
		    !probe_wait(&pc, 5 * SEC))
			bad |= 4;
		if (probe_count(&p) != 0 ||
		    cancel_token_is_canceled(cancel_source_token(&a)))
			bad |= 8;
		_exit(bad);
	}
	/* In the parent the deadline fires as usual. */
	assert_true(probe_wait(&p, 5 * SEC));
	assert_int_equal(p.reason, ETIMEDOUT);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	probe_fini(&p);
	assert_int_equal(cancel_source_destroy(&a), 0);
}

/* ------------------------------------------------------------------ */
/* The library thread's other clients: deferred work, signal finishes */
/* ------------------------------------------------------------------ */

struct gate_args {
	int *waiting;
	int *gate;
};
static struct gate_args gate_args;

static void *
gate_opener(void *arg)
{
	struct gate_args *g = arg;

	tu_await(g->waiting);
	/* Give the main thread a chance to block in cancel__work_wait();
	 * the test is correct either way. */
	for (int i = 0; i < 100; i++)
		sched_yield();
	tu_signal(g->gate);
	return NULL;
}

struct job {
	struct cancel__work w;
	int id;
	int *gate;      /* if set: signal *started, then await *gate */
	int *started;
	int finished;
	bool on_lt;
	pthread_t thread;
};

static int job_log[16];
static int job_nlog;

static void
job_fn(struct cancel__work *w)
{
	struct job *j = (struct job *)(void *)w;

	j->on_lt = cancel__lt_is_self();
	j->thread = pthread_self();
	if (j->gate != NULL) {
		tu_signal(j->started);
		tu_await(j->gate);
	}
	pthread_mutex_lock(&order_mu);
	job_log[job_nlog++] = j->id;
	j->finished = 1;
	norder++;
	pthread_cond_broadcast(&order_cv);
	pthread_mutex_unlock(&order_mu);
}

/* What a poster does before its item's memory goes away. */
static void
job_reap(struct job *j)
{
	if (!cancel__work_revoke(&j->w))
		cancel__work_wait(&j->w);
	/* Done now: a second revoke reports it as finished. */
	assert_true(cancel__work_revoke(&j->w));
}

static void
work_items_run_once_on_work_threads(void **state)
{
	(void)state;
	struct job j[3];

	memset(j, 0, sizeof(j));
	norder = 0;
	job_nlog = 0;
	for (int i = 0; i < 3; i++) {
		j[i].id = i + 1;
		j[i].w.fn = job_fn;
		assert_int_equal(cancel__work_post(&j[i].w), 0);
	}
	assert_true(wait_order_count(3, 5 * SEC) == 3);
	int seen = 0;
	for (int i = 0; i < 3; i++) {
		/* Each ran once; items posted back to back may run on
		 * several work threads at once (none waits behind another
		 * that blocks), so only the set is fixed, not the order. */
		seen |= 1 << job_log[i];
		/* Not the timer thread, not ours: a work thread. */
		assert_false(j[i].on_lt);
		assert_false(pthread_equal(j[i].thread, pthread_self()));
		job_reap(&j[i]);
	}
	assert_int_equal(seen, 0xe);
}

/* A work item stuck on a user's mutex must not hold back deadlines. */
static void
deadline_fires_while_a_work_item_blocks(void **state)
{
	(void)state;
	int gate = 0, started = 0;
	struct job blocker;
	memset(&blocker, 0, sizeof(blocker));
	blocker.w.fn = job_fn;
	blocker.gate = &gate;
	blocker.started = &started;
	norder = 0;
	job_nlog = 0;
	assert_int_equal(cancel__work_post(&blocker.w), 0);
	tu_await(&started);
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	assert_int_equal(cancel_source_cancel_after(&s, 20 * MS), 0);
	struct timespec dl = cancel_deadline_in(5 * SEC);
	assert_int_equal(cancel_wait(&dl, cancel_source_token(&s)), ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_source_token(&s)),
	                 ETIMEDOUT);
	tu_signal(&gate);
	job_reap(&blocker);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
work_revoke_removes_queued_item_and_waits_for_running_one(void **state)
{
	(void)state;
	int gate = 0, started = 0, waiting = 0;
	struct job blocker, queued, never;

	memset(&blocker, 0, sizeof(blocker));
	memset(&queued, 0, sizeof(queued));
	memset(&never, 0, sizeof(never));
	norder = 0;
	job_nlog = 0;
	/* Never posted: nothing to take back. */
	assert_true(cancel__work_revoke(&never.w));

	blocker.id = 1;
	blocker.w.fn = job_fn;
	blocker.gate = &gate;
	blocker.started = &started;
	queued.id = 2;
	queued.w.fn = job_fn;
	assert_int_equal(cancel__work_post(&blocker.w), 0);
	tu_await(&started);
	/* Another work thread may take queued at once (none waits behind
	 * the blocked one): revoke either takes it back before it starts
	 * (it then never runs) or finds it running (then wait for it). */
	assert_int_equal(cancel__work_post(&queued.w), 0);
	if (!cancel__work_revoke(&queued.w))
		cancel__work_wait(&queued.w);
	/* Now it is neither queued nor running: it either ran (finished)
	 * or was taken back and never runs. */
	pthread_mutex_lock(&order_mu);
	bool revoked = queued.finished == 0;
	pthread_mutex_unlock(&order_mu);
	assert_false(cancel__work_revoke(&blocker.w));

	/* Another thread opens the gate once we are about to wait. */
	gate_args.waiting = &waiting;
	gate_args.gate = &gate;
	pthread_t t = tu_spawn(gate_opener, &gate_args);
	tu_signal(&waiting);
	cancel__work_wait(&blocker.w);
	/* wait returned: the running item has finished. */
	pthread_mutex_lock(&order_mu);
	assert_int_equal(blocker.finished, 1);
	pthread_mutex_unlock(&order_mu);
	tu_join(t);
	assert_true(cancel__work_revoke(&blocker.w));

	/* A later item runs; the revoked one never did. */
	struct job clock_job;
	memset(&clock_job, 0, sizeof(clock_job));
	clock_job.id = 3;
	clock_job.w.fn = job_fn;
	assert_int_equal(cancel__work_post(&clock_job.w), 0);
	size_t want = revoked ? 2 : 3;
	assert_true(wait_order_count(want, 5 * SEC) == want);
	pthread_mutex_lock(&order_mu);
	assert_int_equal(queued.finished, revoked ? 0 : 1);
	bool saw_clock = false;
	for (size_t i = 0; i < want; i++)
		saw_clock = saw_clock || job_log[i] == 3;
	pthread_mutex_unlock(&order_mu);
	assert_true(saw_clock);
	job_reap(&clock_job);
	job_reap(&queued);
}

static int sig_log[3];
static int sig_nlog;

static void
sig_fn(void *arg)
{
	pthread_mutex_lock(&order_mu);
	sig_log[sig_nlog++] = (int)(intptr_t)arg;
	if (!cancel__lt_is_self())
		sig_log[0] = -100; /* not on the library thread */
	norder++;
	pthread_cond_broadcast(&order_cv);
	pthread_mutex_unlock(&order_mu);
}

static void
signal_cancels_finish_on_library_thread_in_post_order(void **state)
{
	(void)state;
	struct cancel_source s[3];
	struct cancel_callback cb[3];

	norder = 0;
	sig_nlog = 0;
	for (int i = 0; i < 3; i++) {
		cancel_source_init(&s[i]);
		memset(&cb[i], 0, sizeof(cb[i]));
		cancel_callback_register(&cb[i], sig_fn, (void *)(intptr_t)i,
		                         cancel_source_token(&s[i]));
	}
	/* Async-signal-safe, so callable here too; the finish is deferred. */
	for (int i = 0; i < 3; i++)
		assert_true(cancel_source_cancel_from_signal(&s[i], EINTR));
	assert_true(wait_order_count(3, 5 * SEC) == 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sig_log[i], i);
		cancel_callback_unregister(&cb[i]);
		assert_int_equal(cancel_source_destroy(&s[i]), 0);
	}
}

static void
no_descriptor_leaked(void **state)
{
	(void)state;
	assert_int_equal(tu_fd_count(), fds_at_start);
}

int
main(void)
{
#define T(f) cmocka_unit_test(f)
	const struct CMUnitTest tests[] = {
		T(cancel_after_fires_with_etimedout_within_bounds),
		T(timer_callback_runs_on_library_thread),
		T(cancel_at_reports_deadline_and_fires_not_before_it),
		T(cancel_at_past_deadline_fires_at_once_on_library_thread),
		T(rearm_earlier_fires_at_the_new_deadline),
		T(rearm_later_does_not_fire_at_the_first_deadline),
		T(disarm_with_never_or_null_prevents_the_fire),
		T(saturating_duration_arms_nothing),
		T(cancel_before_deadline_keeps_ecanceled_and_one_callback),
		T(cancel_after_on_canceled_source_is_a_successful_noop),
		T(bad_arguments_return_einval_and_arm_nothing),
		T(timer_calls_leave_errno_unchanged),
		T(linked_child_of_timed_parent_gets_etimedout),
		T(destroy_of_armed_source_disarms_it),
		T(callback_may_destroy_and_free_its_timed_source),
		T(ten_thousand_timers_fire_once_in_deadline_order),
		T(hundred_thousand_armed_sources_disarm_and_fire),
		T(tiny_deadline_then_destroy_never_touches_freed_source),
		T(destroy_waits_for_a_firing_about_to_cancel_its_source),
		T(destroy_waits_for_the_end_of_a_firing_that_ran_its_callback),
		T(forked_child_arms_a_timer_that_fires),
		T(parent_armed_deadline_does_not_fire_in_child),
		T(work_items_run_once_on_work_threads),
		T(deadline_fires_while_a_work_item_blocks),
		T(work_revoke_removes_queued_item_and_waits_for_running_one),
		T(signal_cancels_finish_on_library_thread_in_post_order),
		T(no_descriptor_leaked),
	};
#undef T
	return cmocka_run_group_tests_name("timer", tests, group_setup, NULL);
}
