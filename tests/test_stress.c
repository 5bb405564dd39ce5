/*
 * Randomized multi-thread stress of the core: register, unregister
 * (waiting and not), try_unregister, cancel, linked create/destroy, short
 * deadlines, destroy and self-unregister, all racing, checked against the
 * contract's oracles.
 *
 * Structure: rounds separated by barriers. At the start of a round the
 * main thread creates the round's sources (roots and linked children, each
 * in its own heap block, so ASan sees any touch after destroy). Workers then
 * run a seeded random mix of operations. Each callback record is owned by
 * one worker (the only thread that registers or unregisters it); any thread
 * may cancel any source. At the end of a round the workers stop, the main
 * thread checks what must hold at quiescence, unregisters what is left,
 * destroys everything and checks again.
 *
 * Oracles: a callback runs at most once; an unregister returns true exactly
 * when its callback never ran; after a waiting unregister returns, the
 * callback is not running and never runs again; a canceled source's
 * unremoved callbacks have all run once; a linked child is canceled exactly
 * when a parent was canceled before the child's destroy (with that
 * parent's reason); the live-object count and the fd table end where they
 * started.
 *
 * Race windows are counted (and the test fails when one was hit less than
 * a minimum): unregister waited for a running callback, register lost the
 * race with cancel, child destroyed during a parent's cancel, timer fired
 * during destroy. Besides the other workers, the library thread serves as
 * the racing party: private sources with a deadline of a few microseconds
 * are registered on in a loop, or unregistered and destroyed while their
 * slow callback runs on that thread.
 *
 * Size: CANCEL_STRESS_OPS operations in total (default 200000; CI runs
 * more under the sanitizers). Seed: CANCEL_TEST_SEED.
 */
/* ctest: TIMEOUT 300 LABELS stress */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cancel.h"
#include "internal.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NWORKERS 4
#define NRECS 16        /* callback records per worker */
#define NROOTS 3
#define NCHILDREN 2
#define NSRC (NROOTS + NCHILDREN)
#define OPS_PER_ROUND 250 /* per worker */


/* ------------------------------------------------------------------ */
/* Failure reporting from any thread                                  */
/* ------------------------------------------------------------------ */

static int failures;
static unsigned seed;

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			check_failed(__LINE__, #cond, __VA_ARGS__);          \
	} while (0)

static void
check_failed(int line, const char *cond, const char *fmt, ...)
{
	va_list ap;
	flockfile(stderr);
	fprintf(stderr, "stress: line %d: %s failed (seed %u): ", line, cond,
	        seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	__atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

static uint64_t
rnd(uint64_t *s)
{
	/* xorshift64* */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 2685821657736338717ull;
}

static unsigned
below(uint64_t *s, unsigned n)
{
	return (unsigned)((rnd(s) >> 33) % n);
}

static void
spin(unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		__asm__ __volatile__("" ::: "memory");
}

static uint64_t
state_of(struct cancel_source *s)
{
	return __atomic_load_n(&s->state_, __ATOMIC_ACQUIRE);
}

static bool
st_canceled(uint64_t s)
{
	return (s & CANCEL__S_CANCELED) != 0;
}

static bool
st_done(uint64_t s)
{
	return (s & CANCEL__S_DONE) != 0;
}

#define LD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)

/* ------------------------------------------------------------------ */
/* Race-window counters                                               */
/* ------------------------------------------------------------------ */

static long w_unreg_waited;   /* waiting unregister found fn running */
static long w_reg_lost;       /* register lost the race with cancel */
static long w_child_destroy;  /* child destroyed during a parent cancel */
static long w_timer_destroy;  /* timer fired during destroy */
static long n_ops;
static long n_callbacks;

/* ------------------------------------------------------------------ */
/* Callback records                                                   */
/* ------------------------------------------------------------------ */

enum { R_IDLE, R_REG };

struct rec {
	struct cancel_callback cb;
	/* Written by the callback (any thread). */
	int running;
	int ran;
	/* Set by the owner before registering; read by the callback. */
	unsigned spin;
	int self_unreg;
	int cancel_other; /* index + 1 of a source to cancel from inside */
	/* Owner only (and main at quiescence). */
	int state;
	int src;
	int snapshot; /* ran when the registration ended */
};

struct worker {
	int id;
	uint64_t rng;
	struct rec recs[NRECS];
	long ops;
};

/* The round's sources: roots then children. */
struct round_src {
	struct cancel_source *src;
	int parents[2];   /* root indices, -1 for none */
	int trues;        /* cancel calls that returned true */
	int true_reason;  /* the reason of that call */
	int direct;       /* a cancel was called on it directly */
	int timed;        /* cancel_after was called on it */
};

static struct round_src rsrc[NSRC];
static pthread_barrier_t barrier;
static int stop;
static long rounds;
static bool timer_works;

static void
rec_fn(void *arg)
{
	struct rec *r = arg;
	int was = __atomic_exchange_n(&r->running, 1, __ATOMIC_ACQ_REL);
	CHECK(was == 0, "callback %p running twice at once", (void *)r);
	int ran = ADD(&r->ran, 1);
	CHECK(ran == 0, "callback %p ran %d times", (void *)r, ran + 1);
	ADD(&n_callbacks, 1);
	if (r->self_unreg) {
		/* ENOENT when register ran it inline (never registered). */
		int rc = cancel_callback_try_unregister(&r->cb);
		CHECK(rc == EINPROGRESS || rc == ENOENT,
		      "try_unregister inside own callback: %d", rc);
		CHECK(!cancel_callback_unregister(&r->cb),
		      "self-unregister returned true");
	}
	if (r->cancel_other > 0) {
		struct cancel_source *o = rsrc[r->cancel_other - 1].src;
		if (cancel_source_cancel_with(o, 77))
			ST(&rsrc[r->cancel_other - 1].trues, 1000);
	}
	if (r->spin > 0)
		spin(r->spin);
	ST(&r->running, 0);
}

/* The owner's waiting unregister, with its oracles. */
static void
rec_unregister(struct rec *r)
{
	int was_running = LD(&r->running);
	bool removed = cancel_callback_unregister(&r->cb);
	CHECK(LD(&r->running) == 0, "callback running after unregister");
	int ran = LD(&r->ran);
	if (removed) {
		CHECK(ran == 0, "unregister true but callback ran");
	} else {
		CHECK(ran == 1, "unregister false but callback never ran");
		if (was_running)
			ADD(&w_unreg_waited, 1);
	}
	r->snapshot = ran;
	r->state = R_IDLE;
}

static void
rec_try_unregister(struct rec *r)
{
	int rc = cancel_callback_try_unregister(&r->cb);
	int ran = LD(&r->ran);
	switch (rc) {
	case 0:
		CHECK(ran == 0, "try_unregister 0 but callback ran");
		r->snapshot = 0;
		r->state = R_IDLE;
		break;
	case EALREADY:
		CHECK(ran == 1, "EALREADY but ran %d", ran);
		CHECK(LD(&r->running) == 0, "EALREADY while running");
		r->snapshot = 1;
		r->state = R_IDLE;
		break;
	case EINPROGRESS:
		/* Still ours to reclaim: the waiting form must now wait. */
		rec_unregister(r);
		CHECK(r->snapshot == 1, "EINPROGRESS but never ran");
		break;
	default:
		CHECK(0, "try_unregister returned %d", rc);
		break;
	}
}

/* Before reusing a record: it never ran after its registration ended. */
static void
rec_check_idle(struct rec *r)
{
	CHECK(LD(&r->ran) == r->snapshot,
	      "callback ran after its unregister returned (%d -> %d)",
	      r->snapshot, LD(&r->ran));
	CHECK(LD(&r->running) == 0, "idle callback running");
}

static void
rec_prepare(struct rec *r, uint64_t *rng)
{
	ST(&r->ran, 0);
	ST(&r->running, 0);
	r->snapshot = 0;
	unsigned k = below(rng, 100);
	r->spin = k < 50   ? 0
	          : k < 85 ? below(rng, 4000)
	                   : 10000 + below(rng, 30000);
	r->self_unreg = below(rng, 100) < 15;
	r->cancel_other = below(rng, 100) < 5 ? (int)below(rng, NSRC) + 1 : 0;
}

static void
rec_register(struct rec *r, int si, uint64_t *rng)
{
	rec_check_idle(r);
	rec_prepare(r, rng);
	cancel_token tok = cancel_source_token(rsrc[si].src);
	bool pre = cancel_token_is_canceled(tok);
	bool registered;
	if (below(rng, 100) < 25) {
		int rc = cancel_callback_try_register(&r->cb, rec_fn, r, tok);
		CHECK(rc == 0 || rc == ECANCELED, "try_register %d", rc);
		CHECK(rc == 0 || LD(&r->ran) == 0,
		      "try_register ran the callback");
		registered = rc == 0;
		if (!registered)
			r->snapshot = 0;
	} else {
		registered = cancel_callback_register(&r->cb, rec_fn, r, tok);
		if (!registered) {
			CHECK(LD(&r->ran) == 1, "register false, fn not run");
			r->snapshot = 1;
		}
	}
	if (!registered) {
		CHECK(cancel_token_is_canceled(tok),
		      "register refused on a live token");
		if (!pre)
			ADD(&w_reg_lost, 1);
		r->state = R_IDLE;
		return;
	}
	r->state = R_REG;
	r->src = si;
}

/* ------------------------------------------------------------------ */
/* Operations                                                         */
/* ------------------------------------------------------------------ */

static void
op_cancel(uint64_t *rng)
{
	int si = (int)below(rng, NSRC);
	int reason = 100 + si;
	ST(&rsrc[si].direct, 1);
	bool won = below(rng, 2) ? cancel_source_cancel_with(rsrc[si].src,
	                                                     reason)
	                         : (reason = ECANCELED,
	                            cancel_source_cancel(rsrc[si].src));
	cancel_token tok = cancel_source_token(rsrc[si].src);
	CHECK(cancel_token_is_canceled(tok), "not canceled after cancel");
	CHECK(cancel_token_reason(tok) != 0, "canceled with reason 0");
	if (won) {
		int t = ADD(&rsrc[si].trues, 1);
		CHECK(t == 0 || t >= 1000, "two cancels returned true");
		ST(&rsrc[si].true_reason, reason);
		CHECK(cancel_token_reason(tok) == reason, "reason %d not %d",
		      cancel_token_reason(tok), reason);
	}
}

static void
op_deadline(uint64_t *rng)
{
	if (!timer_works)
		return;
	int si = (int)below(rng, NSRC);
	ST(&rsrc[si].timed, 1);
	int rc = cancel_source_cancel_after(rsrc[si].src,
	                                    below(rng, 51) * 1000ull);
	CHECK(rc == 0, "cancel_after %d", rc);
}

static void
op_query(uint64_t *rng)
{
	int si = (int)below(rng, NSRC);
	cancel_token tok = cancel_source_token(rsrc[si].src);
	int reason = cancel_token_reason(tok);
	if (reason != 0)
		CHECK(cancel_token_is_canceled(tok), "reason without flag");
	CHECK(cancel_token_check(tok) == (reason != 0 ? ECANCELED : 0) ||
	          reason == 0,
	      "check disagrees with reason");
	struct timespec ts;
	(void)cancel_token_deadline(tok, &ts);
	struct timespec dl = cancel_deadline_in(below(rng, 20) * 1000ull);
	int rc = cancel_wait(&dl, tok);
	CHECK(rc == ETIMEDOUT || rc == ECANCELED, "cancel_wait %d", rc);
	if (rc == ECANCELED)
		CHECK(cancel_token_reason(tok) != 0, "ECANCELED, reason 0");
}

/* A child linked to one or two roots, created and destroyed right here
 * while the roots may be canceled on other threads. */
static void
op_linked(uint64_t *rng)
{
	struct cancel_source *child = malloc(sizeof(*child));
	if (child == NULL)
		abort();
	int p[2] = {(int)below(rng, NROOTS), -1};
	size_t n = 1;
	if (below(rng, 2)) {
		p[1] = (int)below(rng, NROOTS);
		n = 2;
	}
	cancel_token parents[3] = {cancel_source_token(rsrc[p[0]].src),
	                           CANCEL_TOKEN_NONE,
	                           cancel_source_token(rsrc[p[1] < 0 ? 0
	                                                              : p[1]]
	                                                   .src)};
	size_t np = n == 1 ? 1 : 3;
	CHECK(cancel_source_init_linked(child, parents, np) == 0,
	      "init_linked");
	bool own_cancel = false, armed = false;
	struct rec r = {.snapshot = 0};
	bool registered = false;
	if (below(rng, 2)) {
		rec_prepare(&r, rng);
		r.cancel_other = 0;
		registered = cancel_callback_register(
		    &r.cb, rec_fn, &r, cancel_source_token(child));
		if (!registered) {
			CHECK(LD(&r.ran) == 1, "register false, fn not run");
			r.snapshot = 1;
		}
	}
	if (below(rng, 10) == 0) {
		own_cancel = true;
		cancel_source_cancel(child);
	}
	if (timer_works && below(rng, 8) == 0) {
		armed = true;
		cancel_source_cancel_after(child, below(rng, 20) * 1000ull);
	}
	spin(below(rng, 3000));

	/* Parent states before the destroy. */
	bool parent_done = false, parent_busy = false;
	for (size_t i = 0; i < n; i++) {
		uint64_t s = state_of(rsrc[p[i]].src);
		if (st_canceled(s) && st_done(s))
			parent_done = true;
		if (st_canceled(s) && !st_done(s))
			parent_busy = true;
	}
	uint64_t cs = state_of(child);
	if (parent_busy || (st_canceled(cs) && !st_done(cs)))
		ADD(&w_child_destroy, 1);
	if (registered) {
		bool removed = cancel_callback_unregister(&r.cb);
		CHECK(LD(&r.running) == 0, "child callback still running");
		CHECK(removed == (LD(&r.ran) == 0),
		      "child callback: unregister %d, ran %d", removed,
		      LD(&r.ran));
		r.snapshot = LD(&r.ran);
	}
	int rc = cancel_source_destroy(child);
	CHECK(rc == 0, "child destroy %d", rc);
	cs = state_of(child);
	if (parent_done)
		CHECK(st_canceled(cs), "parent canceled, child not");
	if (st_canceled(cs) && !own_cancel) {
		int reason = cancel__state_reason(cs);
		bool from_parent = false;
		for (size_t i = 0; i < n; i++) {
			cancel_token pt = cancel_source_token(rsrc[p[i]].src);
			if (cancel_token_reason(pt) == reason)
				from_parent = true;
		}
		CHECK(from_parent || (armed && reason == ETIMEDOUT),
		      "child canceled (reason %d) without a parent", reason);
	}
	if (registered && r.snapshot == 1)
		CHECK(st_canceled(cs), "child callback ran, child live");
	rec_check_idle(&r);
	memset(child, 0xa5, sizeof(*child));
	free(child);
}

/* A source with a short deadline destroyed while the timer may fire. */
static void
op_timer_destroy(uint64_t *rng)
{
	if (!timer_works)
		return;
	struct cancel_source *s = malloc(sizeof(*s));
	if (s == NULL)
		abort();
	cancel_source_init(s);
	struct rec r = {.snapshot = 0};
	bool registered = false;
	/* Mode 0: no callback. 1: a callback, unregistered before the
	 * destroy. 2: a slow callback left to the firing; destroy is called
	 * while it runs and must wait for the firing to end. 3: the same,
	 * but a waiting unregister is called while it runs. */
	unsigned mode = below(rng, 4);
	if (mode > 0) {
		rec_prepare(&r, rng);
		r.cancel_other = 0;
		r.self_unreg = 0;
		if (mode >= 2)
			r.spin = 20000 + below(rng, 20000);
		registered = cancel_callback_register(
		    &r.cb, rec_fn, &r, cancel_source_token(s));
		CHECK(registered, "register on a fresh source");
	}
	CHECK(cancel_source_cancel_after(s, below(rng, 51) * 1000ull) == 0,
	      "cancel_after");
	if (mode >= 2) {
		/* Until the callback runs (or 2 ms: a late timer). */
		uint64_t give_up = tu_now_ns() + 2000000;
		while (!LD(&r.running) && !LD(&r.ran) && tu_now_ns() < give_up)
			spin(50);
		if (mode == 2 && (LD(&r.running) || LD(&r.ran)))
			registered = false; /* popped: destroy may proceed */
		if (mode == 3) {
			/* Counts the window when it waits. */
			rec_unregister(&r);
			registered = false;
		}
	} else {
		/* Land near the deadline: 0..60 us. */
		uint64_t until = tu_now_ns() + below(rng, 60) * 1000ull;
		while (tu_now_ns() < until)
			spin(50);
	}
	if (registered) {
		bool removed = cancel_callback_unregister(&r.cb);
		CHECK(LD(&r.running) == 0, "timer callback still running");
		CHECK(removed == (LD(&r.ran) == 0),
		      "timer callback: unregister %d, ran %d", removed,
		      LD(&r.ran));
	}
	uint64_t pre = state_of(s);
	int rc = cancel_source_destroy(s);
	CHECK(rc == 0, "destroy %d", rc);
	uint64_t post = state_of(s);
	if ((!st_canceled(pre) && st_canceled(post)) ||
	    (st_canceled(pre) && !st_done(pre)))
		ADD(&w_timer_destroy, 1);
	if (st_canceled(post)) {
		CHECK(st_done(post), "destroy returned before the firing");
		CHECK(cancel__state_reason(post) == ETIMEDOUT, "reason %d",
		      cancel__state_reason(post));
	}
	/* After destroy the firing is over: the callback ran to its end or
	 * was removed, and never runs again. */
	CHECK(LD(&r.running) == 0, "timer callback running after destroy");
	r.snapshot = LD(&r.ran);
	if (mode > 0 && r.snapshot == 1)
		CHECK(st_canceled(post), "callback ran, source not canceled");
	spin(200);
	rec_check_idle(&r);
	memset(s, 0xa5, sizeof(*s));
	free(s);
}

/* Register and unregister one record on a live root in a tight loop, so
 * that a cancel from another thread lands in the middle of a register. */
static void
op_register_burst(struct worker *w, uint64_t *rng)
{
	if (timer_works && below(rng, 2)) {
		/* Against the library thread: a private source whose
		 * deadline lands in the middle of the loop. */
		struct cancel_source *s = malloc(sizeof(*s));
		if (s == NULL)
			abort();
		cancel_source_init(s);
		cancel_token tok = cancel_source_token(s);
		struct rec r = {.snapshot = 0};
		cancel_source_cancel_after(s, 2000 + below(rng, 20000));
		uint64_t give_up = tu_now_ns() + 2000000;
		while (tu_now_ns() < give_up) {
			rec_check_idle(&r);
			rec_prepare(&r, rng);
			r.cancel_other = 0;
			r.spin = 0;
			bool pre = cancel_token_is_canceled(tok);
			if (pre)
				break;
			bool ok = cancel_callback_register(&r.cb, rec_fn, &r,
			                                   tok);
			if (!ok) {
				CHECK(LD(&r.ran) == 1, "refused, not run");
				ADD(&w_reg_lost, 1);
				r.snapshot = 1;
				break;
			}
			r.state = R_REG;
			rec_unregister(&r);
		}
		CHECK(cancel_source_destroy(s) == 0, "burst destroy");
		rec_check_idle(&r);
		memset(s, 0xa5, sizeof(*s));
		free(s);
		return;
	}
	struct rec *r = &w->recs[below(rng, NRECS)];
	if (r->state != R_IDLE)
		return;
	int si = (int)below(rng, NROOTS);
	for (int i = 0; i < 1000; i++) {
		if (cancel_token_is_canceled(cancel_source_token(rsrc[si].src)))
			break;
		rec_register(r, si, rng);
		if (r->state != R_REG)
			break;
		rec_unregister(r);
	}
}

/* Unregister an own callback that some cancel is running right now. */
static bool
op_hunt(struct worker *w)
{
	for (int i = 0; i < NRECS; i++) {
		struct rec *r = &w->recs[i];
		if (r->state == R_REG && LD(&r->running)) {
			rec_unregister(r);
			return true;
		}
	}
	return false;
}

static void
worker_round(struct worker *w)
{
	uint64_t *rng = &w->rng;
	for (int i = 0; i < OPS_PER_ROUND; i++) {
		unsigned k = below(rng, 100);
		struct rec *r = &w->recs[below(rng, NRECS)];
		w->ops++;
		if (op_hunt(w))
			continue;
		if (k < 5) {
			op_register_burst(w, rng);
		} else if (k < 35) {
			if (r->state == R_IDLE)
				rec_register(r, (int)below(rng, NSRC), rng);
		} else if (k < 60) {
			if (r->state == R_REG)
				rec_unregister(r);
		} else if (k < 71) {
			if (r->state == R_REG)
				rec_try_unregister(r);
		} else if (k < 73) {
			op_cancel(rng);
		} else if (k < 77) {
			op_deadline(rng);
		} else if (k < 84) {
			op_linked(rng);
		} else if (k < 88) {
			op_timer_destroy(rng);
		} else if (k < 92) {
			op_query(rng);
		} else {
			spin(below(rng, 500));
		}
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	for (;;) {
		pthread_barrier_wait(&barrier); /* round start */
		if (LD(&stop))
			break;
		worker_round(w);
		pthread_barrier_wait(&barrier); /* round end */
		pthread_barrier_wait(&barrier); /* main checked, records free */
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Rounds (main thread)                                               */
/* ------------------------------------------------------------------ */

static struct worker workers[NWORKERS];

static void
round_setup(uint64_t *rng)
{
	for (int i = 0; i < NSRC; i++) {
		struct cancel_source *s = malloc(sizeof(*s));
		if (s == NULL)
			abort();
		rsrc[i] = (struct round_src){.src = s, .parents = {-1, -1}};
	}
	for (int i = 0; i < NROOTS; i++)
		cancel_source_init(rsrc[i].src);
	/* Child 0 has one parent (no allocation); child 1 two (one array). */
	for (int c = 0; c < NCHILDREN; c++) {
		struct round_src *rs = &rsrc[NROOTS + c];
		rs->parents[0] = (int)below(rng, NROOTS);
		if (c == 1)
			rs->parents[1] = (rs->parents[0] + 1) % NROOTS;
		cancel_token p[2];
		size_t n = 0;
		for (int j = 0; j < 2; j++)
			if (rs->parents[j] >= 0)
				p[n++] = cancel_source_token(
				    rsrc[rs->parents[j]].src);
		CHECK(cancel_source_init_linked(rs->src, p, n) == 0,
		      "round child init");
	}
}

/* Workers are parked at the barrier; timers may still fire. */
static void
round_check_and_teardown(void)
{
	/* A source whose cancel has finished ran every callback still
	 * registered (owner's view), each once. */
	for (int wi = 0; wi < NWORKERS; wi++) {
		for (int i = 0; i < NRECS; i++) {
			struct rec *r = &workers[wi].recs[i];
			if (r->state != R_REG)
				continue;
			uint64_t s = state_of(rsrc[r->src].src);
			if (st_canceled(s) && st_done(s))
				CHECK(LD(&r->ran) == 1 && LD(&r->running) == 0,
				      "canceled source left a callback unrun");
		}
	}
	/* Children: a parent whose cancel finished canceled the child. */
	for (int c = NROOTS; c < NSRC; c++) {
		bool parent_done = false;
		for (int j = 0; j < 2; j++) {
			int pi = rsrc[c].parents[j];
			if (pi < 0)
				continue;
			uint64_t s = state_of(rsrc[pi].src);
			if (st_canceled(s) && st_done(s))
				parent_done = true;
		}
		if (parent_done)
			CHECK(st_canceled(state_of(rsrc[c].src)),
			      "round child not canceled by its parent");
	}
	/* Stop the deadlines; a firing in progress is waited for below by
	 * unregister (its callbacks) and destroy (its finish). */
	for (int i = 0; i < NSRC; i++)
		CHECK(cancel_source_cancel_after(rsrc[i].src, CANCEL_NEVER) ==
		          0,
		      "disarm");
	for (int wi = 0; wi < NWORKERS; wi++)
		for (int i = 0; i < NRECS; i++)
			if (workers[wi].recs[i].state == R_REG)
				rec_unregister(&workers[wi].recs[i]);
	/* Children first; parents refuse while children live. */
	for (int i = NSRC - 1; i >= 0; i--) {
		if (i < NROOTS)
			CHECK(cancel_source_destroy(rsrc[i].src) == 0,
			      "root destroy");
		else {
			int rc = cancel_source_destroy(rsrc[i].src);
			CHECK(rc == 0, "child destroy %d", rc);
		}
	}
	/* Child oracle after the fact: canceled only through a parent, a
	 * direct cancel, a callback's cancel or its own deadline. */
	for (int c = NROOTS; c < NSRC; c++) {
		uint64_t cs = state_of(rsrc[c].src);
		if (!st_canceled(cs))
			continue;
		CHECK(st_done(cs), "destroyed child not done");
		int reason = cancel__state_reason(cs);
		bool ok = LD(&rsrc[c].direct) || LD(&rsrc[c].trues) != 0 ||
		          (LD(&rsrc[c].timed) && reason == ETIMEDOUT);
		for (int j = 0; j < 2; j++) {
			int pi = rsrc[c].parents[j];
			if (pi >= 0 &&
			    cancel__state_reason(state_of(rsrc[pi].src)) ==
			        reason)
				ok = true;
		}
		CHECK(ok, "round child canceled (reason %d) from nowhere",
		      reason);
	}
	/* Reasons: the one cancel that returned true set it. */
	for (int i = 0; i < NSRC; i++) {
		uint64_t s = state_of(rsrc[i].src);
		int t = LD(&rsrc[i].trues);
		if (t == 1)
			CHECK(cancel__state_reason(s) ==
			          LD(&rsrc[i].true_reason),
			      "reason of the winning cancel lost");
		if (st_canceled(s) && t == 0 && i < NROOTS)
			CHECK(cancel__state_reason(s) == ETIMEDOUT,
			      "root canceled by nobody (reason %d)",
			      cancel__state_reason(s));
	}
	/* After every destroy: nothing runs any more. */
	for (int wi = 0; wi < NWORKERS; wi++)
		for (int i = 0; i < NRECS; i++)
			rec_check_idle(&workers[wi].recs[i]);
	for (int i = 0; i < NSRC; i++) {
		memset(rsrc[i].src, 0xa5, sizeof(*rsrc[i].src));
		free(rsrc[i].src);
		rsrc[i].src = NULL;
	}
}

static long
env_long(const char *name, long def)
{
	const char *e = getenv(name);
	if (e == NULL || *e == '\0')
		return def;
	long v = strtol(e, NULL, 0);
	return v > 0 ? v : def;
}

/* The minimum hits of each window for a run of @ops operations. */
static long
window_min(long ops, long per_200k)
{
	long m = per_200k * ops / 200000;
	return m < 1 ? 1 : m;
}

/*
 * Whether every race window reached its minimum for a run of @ops
 * operations (read between rounds, when the workers are parked).
 */
static bool
windows_met(long ops)
{
	return LD(&w_unreg_waited) >= window_min(ops, 100) &&
	       LD(&w_reg_lost) >= window_min(ops, 50) &&
	       LD(&w_child_destroy) >= window_min(ops, 20) &&
	       (!timer_works || LD(&w_timer_destroy) >= window_min(ops, 100));
}

/* Extra time allowed for rounds beyond the planned ones (see below). */
#define EXTRA_NS (60ull * 1000000000ull)

static void
stress_core_races_keep_every_oracle(void **state)
{
	(void)state;
	seed = tu_seed("stress");
	uint64_t rng = (uint64_t)seed * 0x9e3779b97f4a7c15ull + 1;
	long total = env_long("CANCEL_STRESS_OPS",
	                      200000);

	/* The timer is always linked; check that it works here. */
	struct cancel_source probe = CANCEL_SOURCE_INITIALIZER;
	timer_works = cancel_source_cancel_after(&probe, 1000) == 0;
	if (timer_works)
		assert_int_equal(cancel_wait(NULL, cancel_source_token(&probe)),
		                 ECANCELED);
	assert_int_equal(cancel_source_destroy(&probe), 0);
	fprintf(stderr, "stress: %ld ops, %d workers, timer %s\n", total,
	        NWORKERS, timer_works ? "on" : "off");

	long live0 = cancel__test_live_objects();
	int fds0 = tu_fd_count();

	pthread_barrier_init(&barrier, NULL, NWORKERS + 1);
	pthread_t th[NWORKERS];
	for (int i = 0; i < NWORKERS; i++) {
		workers[i].id = i;
		workers[i].rng = rnd(&rng) | 1;
		th[i] = tu_spawn(worker_main, &workers[i]);
	}
	uint64_t t0 = tu_now_ns();
	long nrounds = total / (NWORKERS * OPS_PER_ROUND);
	if (nrounds < 1)
		nrounds = 1;
	/*
	 * After the planned rounds, keep going while some race window is
	 * still under its minimum (a loaded machine races less), for at most
	 * EXTRA_NS more: the windows then fail the test below, but a slow
	 * scheduler alone does not.
	 */
	uint64_t extra_until = 0;
	long extra_rounds = 0;
	for (rounds = 0;; rounds++) {
		if (rounds >= nrounds) {
			if (windows_met(total))
				break;
			if (extra_until == 0)
				extra_until = tu_now_ns() + EXTRA_NS;
			else if (tu_now_ns() > extra_until)
				break;
			extra_rounds++;
		}
		round_setup(&rng);
		pthread_barrier_wait(&barrier); /* go */
		pthread_barrier_wait(&barrier); /* workers done */
		round_check_and_teardown();
		CHECK(cancel__test_live_objects() == live0,
		      "round %ld: live objects %ld, expected %ld", rounds,
		      cancel__test_live_objects(), live0);
		pthread_barrier_wait(&barrier); /* next */
		if (LD(&failures) > 20)
			break;
	}
	ST(&stop, 1);
	pthread_barrier_wait(&barrier);
	for (int i = 0; i < NWORKERS; i++) {
		tu_join(th[i]);
		n_ops += workers[i].ops;
	}
	pthread_barrier_destroy(&barrier);
	double secs = (double)(tu_now_ns() - t0) / 1e9;

	if (extra_rounds > 0)
		fprintf(stderr, "stress: %ld extra rounds to reach the race "
		                "window minimums\n",
		        extra_rounds);
	fprintf(stderr,
	        "stress: %ld rounds, %ld ops, %ld callbacks run in %.2f s\n"
	        "stress: windows hit: unregister waited %ld, register lost "
	        "%ld, child destroyed during parent cancel %ld, timer fired "
	        "during destroy %ld\n",
	        rounds, n_ops, n_callbacks, secs, w_unreg_waited, w_reg_lost,
	        w_child_destroy, w_timer_destroy);

	assert_int_equal(LD(&failures), 0);
	assert_true(n_ops > 0);
	assert_int_equal(cancel__test_live_objects(), live0);
	assert_int_equal(tu_fd_count(), fds0);

	/* Each window must have been exercised for real (the minimums are
	 * a fifth to a tenth of what a loaded 2-core machine hits). */
	struct {
		const char *name;
		long hits, min;
	} win[] = {
		{"unregister waited", w_unreg_waited, window_min(total, 100)},
		{"register lost", w_reg_lost, window_min(total, 50)},
		{"child destroyed during parent cancel", w_child_destroy,
		 window_min(total, 20)},
		{"timer fired during destroy", w_timer_destroy,
		 timer_works ? window_min(total, 100) : 0},
	};
	bool all_hit = true;
	for (size_t i = 0; i < sizeof(win) / sizeof(win[0]); i++) {
		if (win[i].hits < win[i].min) {
			fprintf(stderr, "stress: window \"%s\" hit %ld times, "
			                "minimum %ld\n",
			        win[i].name, win[i].hits, win[i].min);
			all_hit = false;
		}
	}
	assert_true(all_hit);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(stress_core_races_keep_every_oracle),
	};
	return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
