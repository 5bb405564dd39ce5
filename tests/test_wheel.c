/*
 * The timer's timing wheel at scale and at its edges (src/libthread.c):
 * many random deadlines fire exactly once, never early, in deadline
 * order; re-arm storms from 4 threads; far deadlines (years, and the
 * saturated tv_sec 2e10) and deadlines on every level's slot boundary;
 * disarm and re-arm racing the expiry on heap sources freed at once;
 * disarms and pushes while a large slot is cascaded; destroys while a
 * backlog is fired in batches; fork with many sources armed. Sizes:
 * 100,000 by default, 1,000,000 with CANCEL_LONG_TESTS=1.
 */
/* ctest: TIMING TIMEOUT 300 LABELS timer */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cancel.h"
#include "internal.h"
#include "testutil.h"

#define US 1000ull
#define MS 1000000ull
#define SEC 1000000000ull
/* The wheel's level-0 slot, the documented granularity (cancel.h). */
#define GRAN_NS 1024ull

/* Children start the library thread again after fork(). */
TU_THREADS_AFTER_FORK

static uint64_t
xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static struct timespec
ts_of(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / SEC), (long)(ns % SEC)};
	return ts;
}

/* ------------------------------------------------------------------ */
/* Items: a source, its callback, what the callback saw               */
/* ------------------------------------------------------------------ */

struct item {
	struct cancel_source src;
	struct cancel_callback cb;
	uint64_t deadline;
	uint64_t fired_at; /* written by the callback */
	uint32_t fired;    /* atomic */
};

static struct item *items;
static size_t *order;
static size_t norder; /* atomic: callbacks done */
static size_t nslot;  /* atomic: order slots taken */

static void
item_fn(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	items[i].fired_at = tu_now_ns();
	__atomic_fetch_add(&items[i].fired, 1u, __ATOMIC_RELAXED);
	size_t k = __atomic_fetch_add(&nslot, 1u, __ATOMIC_RELAXED);
	if (order != NULL)
		order[k] = i;
	/* Release, after every write above: pairs with await_fired(). */
	__atomic_fetch_add(&norder, 1u, __ATOMIC_RELEASE);
}

static void
items_new(size_t n)
{
	items = calloc(n, sizeof(*items));
	order = calloc(n, sizeof(*order));
	assert_non_null(items);
	assert_non_null(order);
	__atomic_store_n(&norder, 0u, __ATOMIC_RELAXED);
	__atomic_store_n(&nslot, 0u, __ATOMIC_RELAXED);
	for (size_t i = 0; i < n; i++) {
		cancel_source_init(&items[i].src);
		assert_true(cancel_callback_register(
		        &items[i].cb, item_fn, (void *)(uintptr_t)i,
		        cancel_source_token(&items[i].src)));
	}
}

/* Unregister and destroy the items @gone (NULL: none) does not name
 * (those were already), then free them all. */
static void
items_free_live(size_t n, bool (*gone)(size_t i))
{
	for (size_t i = 0; i < n; i++) {
		if (gone != NULL && gone(i))
			continue;
		cancel_callback_unregister(&items[i].cb);
		assert_int_equal(cancel_source_destroy(&items[i].src), 0);
	}
	free(items);
	free(order);
	items = NULL;
	order = NULL;
}

static void
items_free(size_t n)
{
	items_free_live(n, NULL);
}

/* Wait until @n callbacks ran, or @timeout_ns passed; the count. */
static size_t
await_fired(size_t n, uint64_t timeout_ns)
{
	uint64_t end = tu_now_ns() + timeout_ns;
	size_t got;
	/* Acquire pairs with item_fn's release increment. */
	while ((got = __atomic_load_n(&norder, __ATOMIC_ACQUIRE)) < n &&
	       tu_now_ns() < end)
		tu_nap();
	return got;
}

/*
 * Once @live callbacks ran: each item @gone names was destroyed and
 * poisoned mid-run and must be untouched; every other one fired once,
 * not before its deadline; nothing else fired.
 */
static void
items_check_live(size_t n, bool (*gone)(size_t i), size_t live)
{
	assert_true(await_fired(live, 120 * SEC) == live);
	for (size_t i = 0; i < n; i++) {
		if (gone(i)) {
			assert_true(tu_poisoned(&items[i].src,
			                        sizeof(items[i].src)));
			assert_true(tu_poisoned(&items[i].cb,
			                        sizeof(items[i].cb)));
			continue;
		}
		assert_int_equal(items[i].fired, 1);
		assert_true(items[i].fired_at >= items[i].deadline);
	}
	assert_int_equal(__atomic_load_n(&norder, __ATOMIC_ACQUIRE), live);
}

/* ------------------------------------------------------------------ */
/* Many random deadlines                                              */
/* ------------------------------------------------------------------ */

static void
random_deadlines_fire_once_never_early_in_order(void **state)
{
	(void)state;
	const size_t n = (size_t)tu_rounds(100000, 1000000);
	uint64_t x = tu_seed("random_deadlines") | 1u;

	items_new(n);
	/* Spread over 2 s from a start after the arming (generous for
	 * sanitizers); a few land on one tick, some on one nanosecond. */
	uint64_t t0 = tu_now_ns();
	uint64_t base = t0 + 500 * MS + n * 5 * US;
	for (size_t i = 0; i < n; i++) {
		uint64_t r = xorshift(&x);
		items[i].deadline = (r & 15) == 0 && i > 0
		                            ? items[i - 1].deadline
		                            : base + r % (2 * SEC);
	}
	for (size_t i = 0; i < n; i++) {
		struct timespec dl = ts_of(items[i].deadline);
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	bool in_time = tu_now_ns() < base;
	if (!in_time)
		fprintf(stderr, "arming took past the first deadline: "
		                "checking exactly-once and never-early only\n");

	assert_true(await_fired(n, 120 * SEC) == n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(items[i].fired, 1);
		assert_true(items[i].fired_at >= items[i].deadline);
		assert_int_equal(cancel_token_reason(cancel_source_token(
		                         &items[i].src)),
		                 ETIMEDOUT);
	}
	if (in_time) {
		/* Deadline order within the granularity (in fact exact). */
		for (size_t k = 1; k < n; k++)
			assert_true(items[order[k - 1]].deadline <=
			            items[order[k]].deadline + GRAN_NS);
	}
	items_free(n);
}

/* ------------------------------------------------------------------ */
/* Re-arm storms                                                      */
/* ------------------------------------------------------------------ */

#define STORM_THREADS 4
#define STORM_SOURCES 2000
/* The storm's "later" deadlines start this far after each re-arm, and
 * the first arms twice as far: none of them may fire before the storm's
 * survivors are counted (a fire in between would count twice). */
#define STORM_FAR (120 * SEC)

struct storm {
	size_t first, count; /* own range of items */
	uint64_t seed;
	long ops;
	uint64_t *min_dl; /* per item: smallest deadline ever asked */
};

static void
min_store(uint64_t *p, uint64_t v)
{
	uint64_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
	while (v < old && !__atomic_compare_exchange_n(
	                          p, &old, v, false, __ATOMIC_RELAXED,
	                          __ATOMIC_RELAXED))
		;
}

/*
 * Re-arm random sources: half in the shared range (every thread), half in
 * the own one; deadlines later (lock-free path), earlier (locked path),
 * a few short enough to fire during the storm, and disarms.
 */
static void *
storm_main(void *arg)
{
	struct storm *st = arg;
	uint64_t x = st->seed | 1u;
	for (long k = 0; k < st->ops; k++) {
		uint64_t r = xorshift(&x);
		size_t i = (r & 1) ? st->first + (r >> 8) % st->count
		                   : (r >> 8) % STORM_SOURCES;
		uint64_t now = tu_now_ns();
		uint64_t d;
		switch ((r >> 40) % 8) {
		case 0:
			d = now + (r >> 20) % (2 * MS); /* may fire soon */
			break;
		case 1:
			cancel_source_cancel_after(&items[i].src,
			                           CANCEL_NEVER);
			continue;
		default:
			d = now + STORM_FAR / 2 + (r >> 20) % (10 * SEC);
			break;
		}
		min_store(&st->min_dl[i], d);
		struct timespec dl = ts_of(d);
		cancel_source_cancel_at(&items[i].src, &dl);
	}
	return NULL;
}

static void
rearm_storm_from_four_threads(void **state)
{
	(void)state;
	const size_t n = STORM_SOURCES * (1 + STORM_THREADS);
	uint64_t seed = tu_seed("rearm_storm");
	uint64_t *min_dl = malloc(n * sizeof(*min_dl));
	assert_non_null(min_dl);
	for (size_t i = 0; i < n; i++)
		min_dl[i] = CANCEL_NEVER;

	items_new(n);
	/* Everyone armed far ahead first: past the end of the storm, even
	 * under valgrind on a slow machine, so nothing but the storm's own
	 * short deadlines fires before the survivors are counted below. */
	for (size_t i = 0; i < n; i++) {
		uint64_t d = tu_now_ns() + STORM_FAR + i * US;
		min_store(&min_dl[i], d);
		struct timespec dl = ts_of(d);
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	struct storm st[STORM_THREADS];
	pthread_t t[STORM_THREADS];
	uint64_t storm_start = tu_now_ns();
	for (int k = 0; k < STORM_THREADS; k++) {
		st[k].first = STORM_SOURCES * (size_t)(k + 1);
		st[k].count = STORM_SOURCES;
		st[k].seed = seed + (uint64_t)k * 7919u;
		st[k].ops = tu_rounds(200000, 2000000);
		st[k].min_dl = min_dl;
		t[k] = tu_spawn(storm_main, &st[k]);
	}
	for (int k = 0; k < STORM_THREADS; k++)
		tu_join(t[k]);
	/* The storm's short deadlines (2 ms at most) fire before a clock
	 * armed after them for 3 ms: fires come in deadline order. */
	struct cancel_source clk = CANCEL_SOURCE_INITIALIZER;
	assert_int_equal(cancel_source_cancel_after(&clk, 3 * MS), 0);
	while (!cancel_token_is_canceled(cancel_source_token(&clk)))
		tu_nap();
	assert_int_equal(cancel_source_destroy(&clk), 0);

	/* Whatever fired, fired once and not before the earliest deadline
	 * anyone asked of that source. */
	size_t fired = __atomic_load_n(&norder, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < n; i++) {
		uint32_t f = __atomic_load_n(&items[i].fired,
		                             __ATOMIC_ACQUIRE);
		assert_true(f <= 1);
		if (f == 1)
			assert_true(items[i].fired_at >= min_dl[i]);
	}
	fprintf(stderr, "storm: %zu of %zu fired during the storm\n", fired,
	        n);

	/* Every survivor re-armed (pushed earlier or later from wherever
	 * the storm left it) to one common near deadline: each fires once,
	 * not before it. */
	uint64_t last = tu_now_ns() + 50 * MS;
	size_t live = 0;
	for (size_t i = 0; i < n; i++) {
		if (cancel_token_is_canceled(
		            cancel_source_token(&items[i].src)))
			continue;
		live++;
		items[i].deadline = last - (i % 1000) * US;
		struct timespec dl = ts_of(items[i].deadline);
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	/* The count above is exact only if no far deadline came due while
	 * it was taken: say so, instead of a miscount, on a machine too
	 * slow for the storm. */
	if (tu_now_ns() - storm_start >= STORM_FAR / 2)
		fail_msg("the storm and the count took %llu ms, more than "
		         "the far deadlines allow",
		         (unsigned long long)((tu_now_ns() - storm_start) /
		                              MS));
	assert_true(await_fired(fired + live, 60 * SEC) == fired + live);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(items[i].fired, 1);
		if (items[i].deadline != 0)
			assert_true(items[i].fired_at >= items[i].deadline);
	}
	items_free(n);
	free(min_dl);
}

/* ------------------------------------------------------------------ */
/* Far deadlines and level boundaries                                 */
/* ------------------------------------------------------------------ */

static void
far_deadlines_are_kept_and_do_not_fire(void **state)
{
	(void)state;
	const size_t n = 12;
	items_new(n);
	uint64_t now = tu_now_ns();
	struct timespec far[12];
	/* Years ahead, each level's span, and the saturated deadlines. */
	for (size_t i = 0; i < 9; i++)
		far[i] = ts_of(now + 3600 * SEC * (1ull << (2 * i)));
	far[9] = ts_of(now + 3ull * 365 * 24 * 3600 * SEC);
	far[10].tv_sec = (time_t)20000000000ll; /* 2e10 s: past 2^64 ns */
	far[10].tv_nsec = 0;
	far[11].tv_sec = (time_t)20000000000ll;
	far[11].tv_nsec = 999999999;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(cancel_source_cancel_at(&items[i].src,
		                                         &far[i]),
		                 0);
		uint64_t d = cancel__timer_deadline(&items[i].src);
		if (i >= 10)
			assert_true(d == CANCEL_NEVER - 1);
		else
			assert_true(d == (uint64_t)far[i].tv_sec * SEC +
			                         (uint64_t)far[i].tv_nsec);
	}
	/* A near one fires among them; the far ones stay armed. */
	struct cancel_source near = CANCEL_SOURCE_INITIALIZER;
	assert_int_equal(cancel_source_cancel_after(&near, 20 * MS), 0);
	while (!cancel_token_is_canceled(cancel_source_token(&near)))
		tu_nap();
	assert_int_equal(__atomic_load_n(&norder, __ATOMIC_ACQUIRE), 0);
	for (size_t i = 0; i < n; i++)
		assert_true(cancel__timer_deadline(&items[i].src) !=
		            CANCEL_NEVER);
	/* Pushing a far one even later, or pulling it near, still works. */
	struct timespec later = ts_of(CANCEL_NEVER - 2);
	assert_int_equal(cancel_source_cancel_at(&items[0].src, &later), 0);
	assert_true(cancel__timer_deadline(&items[0].src) == CANCEL_NEVER - 2);
	assert_int_equal(cancel_source_cancel_after(&items[10].src, 10 * MS),
	                 0);
	assert_true(await_fired(1, 10 * SEC) == 1);
	assert_int_equal(items[10].fired, 1);
	assert_int_equal(cancel_source_destroy(&near), 0);
	items_free(n); /* destroy disarms the rest */
}

/*
 * Deadlines on the absolute slot boundaries of levels 0-3 (1.024 us,
 * 65.5 us, 4.19 ms, 268 ms) and one tick either side: each fires once,
 * never early, within a generous bound; boundaries of levels 4-8 are armed
 * and disarmed (too far to wait for).
 */
static void
deadlines_on_level_boundaries_fire_once_not_early(void **state)
{
	(void)state;
	const size_t n = 9 * 3;
	items_new(n);
	uint64_t now = tu_now_ns() + 2 * MS;
	for (unsigned lv = 0; lv < 9; lv++) {
		unsigned sh = 10 + 6 * lv;
		uint64_t b = ((now >> sh) + 1) << sh;
		for (unsigned j = 0; j < 3; j++) {
			struct item *it = &items[lv * 3 + j];
			it->deadline = b - GRAN_NS + j * GRAN_NS;
			struct timespec dl = ts_of(it->deadline);
			assert_int_equal(cancel_source_cancel_at(&it->src, &dl),
			                 0);
		}
	}
	for (unsigned lv = 4; lv < 9; lv++)
		for (unsigned j = 0; j < 3; j++)
			cancel_source_cancel_after(&items[lv * 3 + j].src,
			                           CANCEL_NEVER);
	assert_true(await_fired(12, 10 * SEC) == 12);
	for (size_t i = 0; i < n; i++) {
		if (i < 12) {
			assert_int_equal(items[i].fired, 1);
			assert_true(items[i].fired_at >= items[i].deadline);
			/* Generous: a loaded machine, a sanitizer. */
			assert_true(items[i].fired_at <
			            items[i].deadline + 2 * SEC);
		} else {
			assert_int_equal(items[i].fired, 0);
		}
	}
	items_free(n);
}

/* ------------------------------------------------------------------ */
/* Disarm and re-arm racing the expiry                                */
/* ------------------------------------------------------------------ */

static uint32_t race_fired; /* atomic */

static void
race_fn(void *arg)
{
	(void)arg;
	__atomic_fetch_add(&race_fired, 1u, __ATOMIC_RELAXED);
}

static void
destroy_and_rearm_race_expiry_on_heap_sources(void **state)
{
	(void)state;
	long rounds = tu_rounds(20000, 200000);
	uint64_t x = tu_seed("race_expiry") | 1u;
	long pushed = 0, destroyed_first = 0;

	__atomic_store_n(&race_fired, 0u, __ATOMIC_RELAXED);
	for (long k = 0; k < rounds; k++) {
		struct cancel_source *s = malloc(sizeof(*s));
		struct cancel_callback *cb = calloc(1, sizeof(*cb));
		assert_non_null(s);
		assert_non_null(cb);
		uint32_t before = __atomic_load_n(&race_fired,
		                                  __ATOMIC_RELAXED);
		cancel_source_init(s);
		cancel_callback_register(cb, race_fn, NULL,
		                         cancel_source_token(s));
		uint64_t r = xorshift(&x);
		uint64_t d = tu_now_ns() + r % (60 * US);
		struct timespec dl = ts_of(d);
		assert_int_equal(cancel_source_cancel_at(s, &dl), 0);
		/* Spin to about the deadline (the library thread wakes a
		 * few tens of us late), then race it. */
		uint64_t at = d - 10 * US + (r >> 32) % (150 * US);
		while (tu_now_ns() < at)
			;
		if (r & 1) {
			/* Push it later, right at the expiry: the lock-free
			 * path against claim_due(). */
			cancel_source_cancel_after(s, 1 * SEC);
			pushed++;
		}
		cancel_callback_unregister(cb);
		assert_int_equal(cancel_source_destroy(s), 0);
		/* Freed at once: a late touch is a use after free. */
		free(s);
		free(cb);
		if (__atomic_load_n(&race_fired, __ATOMIC_RELAXED) == before)
			destroyed_first++;
	}
	fprintf(stderr, "%ld rounds (%ld pushed), %ld destroyed unfired\n",
	        rounds, pushed, destroyed_first);
	assert_true(__atomic_load_n(&race_fired, __ATOMIC_RELAXED) <=
	            (uint32_t)rounds);
}

/* ------------------------------------------------------------------ */
/* Disarms and pushes while a large slot cascades                     */
/* ------------------------------------------------------------------ */

static int cascade_once;   /* the hook has not acted yet */
static int cascade_paused; /* the library thread waits in the hook */
static int cascade_resume; /* the test has done its part */

/* The entries the cascade test destroys: three in four. */
static bool
cascade_gone(size_t i)
{
	return i % 4 != 0;
}

/* On the library thread, lt_mu dropped, between two batches of one
 * cascade: the first time, let the test thread act, and wait for it. */
static void
cascade_hook(void)
{
	if (__atomic_exchange_n(&cascade_once, 0, __ATOMIC_ACQ_REL) == 0)
		return;
	tu_signal(&cascade_paused);
	tu_await(&cascade_resume);
}

/*
 * A slot of 20,000 entries is cascaded in batches, the wheel's lock
 * dropped between them (libthread.c wheel_advance, its lanes). The test
 * hook holds the library thread there after the first batch while this
 * thread destroys three entries in four (so six of the slot's eight
 * lanes become empty at once: they were filled in turn) and pushes one
 * in eight later. Destroyed ones are poisoned at once and must never fire
 * nor be written again; every other one fires once, not before its
 * (pushed) deadline, in deadline order.
 */
static void
disarms_and_pushes_while_a_large_slot_cascades(void **state)
{
	(void)state;
	const size_t n = 20000;
	uint64_t x = tu_seed("cascade") | 1u;

	items_new(n);
	__atomic_store_n(&cascade_paused, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&cascade_resume, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&cascade_once, 1, __ATOMIC_RELEASE);
	cancel__test_cascade_hook(cascade_hook);

	/* One aligned span of 2^22 ns, 400 ms ahead: every deadline shares
	 * the digits of level 2 and up, so all sit in one slot of level 3
	 * or above and are cascaded together. */
	const uint64_t span = 1ull << 22;
	uint64_t base = ((tu_now_ns() + 400 * MS) | (span - 1)) + 1;
	for (size_t i = 0; i < n; i++) {
		items[i].deadline = base + xorshift(&x) % span;
		struct timespec dl = ts_of(items[i].deadline);
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	bool in_time = tu_now_ns() < base;

	/* Bounded: a cascade must come before the first deadline. */
	uint64_t give_up = base + 60 * SEC;
	while (!__atomic_load_n(&cascade_paused, __ATOMIC_ACQUIRE) &&
	       tu_now_ns() < give_up)
		sched_yield();
	bool paused = __atomic_load_n(&cascade_paused, __ATOMIC_ACQUIRE);
	size_t fired_before = __atomic_load_n(&norder, __ATOMIC_ACQUIRE);
	size_t destroyed = 0, pushed = 0;
	int bad = 0;
	if (paused) {
		for (size_t i = 0; i < n; i++) {
			if (cascade_gone(i)) {
				cancel_callback_unregister(&items[i].cb);
				bad |= cancel_source_destroy(&items[i].src);
				tu_poison(&items[i].src,
				          sizeof(items[i].src));
				tu_poison(&items[i].cb, sizeof(items[i].cb));
				destroyed++;
			} else if (i % 8 == 0) {
				items[i].deadline += 1 * MS;
				struct timespec dl = ts_of(items[i].deadline);
				bad |= cancel_source_cancel_at(&items[i].src,
				                               &dl);
				pushed++;
			}
		}
	}
	/* Let the library thread go on before any assert can end us. */
	tu_signal(&cascade_resume);
	cancel__test_cascade_hook(NULL);
	if (!paused)
		fail_msg("no cascade of the big slot within 60 s");
	assert_int_equal(bad, 0);
	assert_int_equal(fired_before, 0);
	fprintf(stderr, "%zu destroyed, %zu pushed during the cascade\n",
	        destroyed, pushed);

	size_t live = n - destroyed;
	items_check_live(n, cascade_gone, live);
	if (in_time) {
		for (size_t k = 1; k < live; k++)
			assert_true(items[order[k - 1]].deadline <=
			            items[order[k]].deadline + GRAN_NS);
	} else {
		fprintf(stderr, "arming took past the first deadline: order "
		                "not checked\n");
	}
	items_free_live(n, cascade_gone);
}

/* ------------------------------------------------------------------ */
/* A backlog fired in batches                                         */
/* ------------------------------------------------------------------ */

#define BACKLOG_N 5000
/* Ranks of fires the hook holds: the first (a backlog piles up behind
 * it), then one inside the first batch taken from that backlog. */
#define BACKLOG_HOLD2 10

static size_t *backlog_rank; /* per item: its place in deadline order */
static int backlog_fires;   /* fires started (hook calls before cancel) */
static int backlog_held[2]; /* the hook holds the library thread */
static int backlog_go[2];   /* the test has done its part */

static void
backlog_hook(bool after)
{
	if (after)
		return;
	int k = __atomic_fetch_add(&backlog_fires, 1, __ATOMIC_RELAXED);
	int h = k == 0 ? 0 : k == BACKLOG_HOLD2 ? 1 : -1;
	if (h < 0)
		return;
	tu_signal(&backlog_held[h]);
	tu_await(&backlog_go[h]);
}

/* The entries the backlog test destroys: every third not yet fired. */
static bool
backlog_gone(size_t i)
{
	size_t r = backlog_rank[i];
	return r >= BACKLOG_HOLD2 + 2 && r % 3 == 0;
}

/*
 * The library thread takes due entries off the wheel a batch at a time
 * and fires them before it takes more (libthread.c wheel_advance,
 * W_DUE_BATCH). 5,000 deadlines 4 us apart (each its own level-0 slot,
 * ranks shuffled over the items) all pass while the fire hook holds the
 * thread in the first one. Then it is held again inside the first
 * batch: some entries are claimed and wait on the due list, most are
 * still on the wheel. This thread destroys every third one not yet
 * fired, poisoning it at once. Destroyed ones must never fire nor be
 * written; every other one fires once, not early, in rank order.
 */
static void
a_backlog_fires_in_batches_in_order_and_destroys_between_stick(void **state)
{
	(void)state;
	const size_t n = BACKLOG_N;
	uint64_t x = tu_seed("backlog") | 1u;
	size_t *rank = malloc(n * sizeof(*rank));
	assert_non_null(rank);
	backlog_rank = rank;
	for (size_t i = 0; i < n; i++)
		rank[i] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = xorshift(&x) % (i + 1), t = rank[i];
		rank[i] = rank[j];
		rank[j] = t;
	}

	items_new(n);
	__atomic_store_n(&backlog_fires, 0, __ATOMIC_RELAXED);
	for (int h = 0; h < 2; h++) {
		__atomic_store_n(&backlog_held[h], 0, __ATOMIC_RELAXED);
		__atomic_store_n(&backlog_go[h], 0, __ATOMIC_RELAXED);
	}
	cancel__test_fire_hook(backlog_hook);

	uint64_t base = tu_now_ns() + 200 * MS, last = 0;
	for (size_t i = 0; i < n; i++) {
		items[i].deadline = base + rank[i] * 4 * US;
		if (items[i].deadline > last)
			last = items[i].deadline;
		struct timespec dl = ts_of(items[i].deadline);
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	bool in_time = tu_now_ns() < base;

	/* Held in the first fire until every deadline has passed. */
	tu_await(&backlog_held[0]);
	while (tu_now_ns() < last + 2 * MS)
		sched_yield();
	tu_signal(&backlog_go[0]);
	tu_await(&backlog_held[1]);

	/* Held before the cancel of rank BACKLOG_HOLD2: ranks up to it
	 * started, the rest wait (claimed or not). Leave a margin of two
	 * ranks for fires whose deadlines share a tick (none here). */
	size_t fired_before = __atomic_load_n(&norder, __ATOMIC_ACQUIRE);
	size_t destroyed = 0;
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		if (!backlog_gone(i))
			continue;
		cancel_callback_unregister(&items[i].cb);
		bad |= cancel_source_destroy(&items[i].src);
		tu_poison(&items[i].src, sizeof(items[i].src));
		tu_poison(&items[i].cb, sizeof(items[i].cb));
		destroyed++;
	}
	tu_signal(&backlog_go[1]);
	cancel__test_fire_hook(NULL);
	assert_int_equal(bad, 0);
	assert_int_equal(fired_before, BACKLOG_HOLD2);

	size_t live = n - destroyed;
	items_check_live(n, backlog_gone, live);
	if (in_time) {
		for (size_t k = 1; k < live; k++)
			assert_true(rank[order[k - 1]] < rank[order[k]]);
	} else {
		fprintf(stderr, "arming took past the first deadline: order "
		                "not checked\n");
	}
	items_free_live(n, backlog_gone);
	backlog_rank = NULL;
	free(rank);
}

/* ------------------------------------------------------------------ */
/* fork()                                                             */
/* ------------------------------------------------------------------ */

static void
fork_with_many_armed_fires_none_in_child(void **state)
{
	(void)state;
	const size_t n = 10000;
	items_new(n);
	/* A second for the arming and the fork, even under valgrind. */
	uint64_t base = tu_now_ns() + 1 * SEC;
	for (size_t i = 0; i < n; i++) {
		/* Spread over the levels from base to minutes. */
		items[i].deadline = base + (i % 100) * MS +
		                    (i / 100) * (i / 100) * (i / 100) * MS;
		struct timespec dl = ts_of(items[i].deadline);
		assert_int_equal(cancel_source_cancel_at(&items[i].src, &dl),
		                 0);
	}
	/* The parent tells the child whether fork() returned before the
	 * first deadline: only then did the child's copy of memory see
	 * nothing fired (else the child's checks would not hold). */
	int go[2];
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int bad = 0;
		char early = 0;
		close(go[1]);
		while (read(go[0], &early, 1) < 0 && errno == EINTR)
			;
		if (!early)
			_exit(0);
		for (size_t i = 0; i < n; i++)
			if (cancel__timer_deadline(&items[i].src) !=
			    CANCEL_NEVER)
				bad |= 1;
		/* Re-arming an inherited source later must arm it afresh
		 * (no lock-free push of a parent's entry). */
		struct timespec soon = ts_of(base + 50 * MS);
		if (cancel_source_cancel_at(&items[0].src, &soon) != 0)
			bad |= 2;
		/* Outlive the parent's first 100 deadlines. */
		struct cancel_source clk = CANCEL_SOURCE_INITIALIZER;
		struct timespec after = ts_of(base + 150 * MS);
		if (cancel_source_cancel_at(&clk, &after) != 0)
			bad |= 4;
		while (!cancel_token_is_canceled(cancel_source_token(&clk)))
			tu_nap();
		if (__atomic_load_n(&items[0].fired, __ATOMIC_ACQUIRE) != 1)
			bad |= 8;
		for (size_t i = 1; i < n; i++)
			if (__atomic_load_n(&items[i].fired,
			                    __ATOMIC_ACQUIRE) != 0)
				bad |= 16;
		/* Destroying inherited armed sources is safe. */
		for (size_t i = 1; i < n; i++) {
			cancel_callback_unregister(&items[i].cb);
			if (cancel_source_destroy(&items[i].src) != 0)
				bad |= 32;
		}
		_exit(bad);
	}
	char early = tu_now_ns() < base;
	close(go[0]);
	assert_int_equal(write(go[1], &early, 1), 1);
	close(go[1]);
	if (!early)
		fprintf(stderr, "arming and fork took past the first "
		                "deadline: child checks skipped\n");
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* In the parent the first 100 fire as usual. */
	assert_true(await_fired(100, 10 * SEC) >= 100);
	for (size_t i = 0; i < 100; i++) {
		assert_int_equal(items[i].fired, 1);
		assert_true(items[i].fired_at >= items[i].deadline);
	}
	items_free(n);
}

int
main(void)
{
	/* Start the library thread first: its wake descriptors stay. */
	if (cancel_signal_prepare() != 0)
		return 1;
	int fds = tu_fd_count();
#define T(f) cmocka_unit_test(f)
	const struct CMUnitTest tests[] = {
		T(random_deadlines_fire_once_never_early_in_order),
		T(rearm_storm_from_four_threads),
		T(far_deadlines_are_kept_and_do_not_fire),
		T(deadlines_on_level_boundaries_fire_once_not_early),
		T(destroy_and_rearm_race_expiry_on_heap_sources),
		T(disarms_and_pushes_while_a_large_slot_cascades),
		T(a_backlog_fires_in_batches_in_order_and_destroys_between_stick),
		T(fork_with_many_armed_fires_none_in_child),
	};
#undef T
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (tu_fd_count() != fds) {
		fprintf(stderr, "descriptors: %d before, %d after\n", fds,
		        tu_fd_count());
		rc |= 1;
	}
	return rc;
}
