/*
 * Randomized multi-thread stress of the core: register, unregister
 * (waiting and not), try_unregister, cancel, linked create/destroy, short
 * deadlines, destroy and self-unregister, all racing, checked against the
 * contract's oracles.
 *
 * Structure: rounds separated by barriers. At the start of a round the
 * main thread creates the round's sources (roots and linked children).
 * Workers then run a seeded random mix of operations. Each callback record
 * is owned by one worker (the only thread that registers or unregisters
 * it); any thread may cancel any source. At the end of a round the workers
 * stop, the main thread checks what must hold at quiescence, unregisters
 * what is left and destroys everything (both in random order) and checks
 * again.
 *
 * Lifetime (SPEC "Lifetime rule"): every source and every callback record
 * is a heap block of its own (tests/lifetime.h), freed right after the
 * destroy or unregister that ends it returns, mid-round as well: sources
 * sit alone on pages made inaccessible at the free (any build faults on a
 * later touch; ASan builds use ASan), records are poisoned and checked
 * when they leave a quarantine.
 *
 * Blocking calls: each worker has two helper threads. A job puts one of
 * them in a blocking call on a private source (cancel_read or cancel_write
 * on a pipe that the other helper streams, cancel_write to a memfd,
 * cancel_poll, cancel_wait, cancel_cond_wait with the other helper
 * sometimes holding the mutex, a waiting unregister of a callback the
 * worker's cancel runs) while the worker, once the call is under way,
 * sometimes tries destroy first (EBUSY), cancels, destroys (retrying on
 * EBUSY) and frees the source at once.
 *
 * Oracles: a callback runs at most once; an unregister returns true exactly
 * when its callback never ran; after a waiting unregister returns, the
 * callback is not running (and, freed, can never run again); a canceled
 * source's unremoved callbacks have all run once; a linked child is
 * canceled exactly when a parent was canceled before the child's destroy,
 * with that parent's reason. Every source has a reason of its own, the only
 * one any cancel call on it uses: exactly one cancel call returns true for
 * a source canceled with that reason (counted with fetch_add) and none for
 * one canceled by its deadline (ETIMEDOUT) or a parent, and every observer
 * (cancel_token_reason, children) sees one reason per source. A blocking
 * call returns what it did (bytes moved match the partner's count) and is
 * never left to its far deadline by a cancel. The timer probe (a deadline
 * neither late beyond a generous bound nor early) fails the test. The
 * live-object count and the fd table end where they started.
 *
 * Race windows are counted (and the test fails when one was hit less than
 * a minimum): unregister waited for a running callback, register lost the
 * race with cancel, child destroyed during a parent's cancel, timer fired
 * during destroy, and per blocking call "destroy raced a woken caller" (the
 * caller had not returned when destroy was called after the cancel),
 * destroy refused a blocked caller (EBUSY) and a cond waiter canceled while
 * a third thread held its mutex. Besides the other workers, the library
 * thread serves as the racing party: private sources with a deadline of a
 * few microseconds are registered on in a loop, or unregistered and
 * destroyed while their slow callback runs on that thread.
 *
 * Size: CANCEL_STRESS_OPS operations in total (default 200000; CI runs
 * more under the sanitizers). Seed: CANCEL_TEST_SEED. CANCEL_STRESS_BLOCKING=0
 * leaves the blocking calls out of the mix.
 */
/* ctest: TIMEOUT 300 LABELS stress */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cancel.h"
#include "core.h"
#include "internal.h"
#include "lifetime.h"
#include "testutil.h"

#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define NWORKERS 4
#define NRECS 16        /* callback records per worker */
#define NROOTS 3
#define NCHILDREN 2
#define NSRC (NROOTS + NCHILDREN)
#define OPS_PER_ROUND 250 /* per worker */
/* A blocking call's deadline: far enough that reaching it means the
 * cancel did not wake the call. */
#define FAR_NS (20ull * 1000000000ull)

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

/* Sources and records: heap blocks freed right after their end. */
static struct cancel_source *
src_new(void)
{
	struct cancel_source *s = lf_alloc(sizeof(*s), LF_PAGE);
	cancel_source_init(s);
	return s;
}

static void
src_free(struct cancel_source *s)
{
	lf_free(s, sizeof(*s), LF_PAGE, "source");
}

/* A reason no other source uses (above every errno value). */
static int reason_next = 1000;

static int
new_reason(void)
{
	return ADD(&reason_next, 1);
}

/* ------------------------------------------------------------------ */
/* Race-window counters                                               */
/* ------------------------------------------------------------------ */

static long w_unreg_waited;   /* waiting unregister found fn running */
static long w_reg_lost;       /* register lost the race with cancel */
static long w_child_destroy;  /* child destroyed during a parent cancel */
static long w_timer_destroy;  /* timer fired during destroy */
static long n_ops;
static long n_callbacks;
static long n_probes;

/* The blocking calls of the mix (see op_blocking). */
enum {
	K_READ,       /* cancel_read on an empty pipe, maybe fed */
	K_WRITE_PIPE, /* cancel_write streaming to a reading partner */
	K_WRITE_FILE, /* cancel_write to a memfd: chunks, no poll */
	K_POLL,       /* cancel_poll on a pipe or no descriptor */
	K_WAIT,       /* cancel_wait / cancel_sleep_until */
	K_COND,       /* cancel_cond_wait, mutex maybe held by the partner */
	K_UNREG,      /* unregister waiting for a callback our cancel runs */
	NKINDS
};

static const char *const kind_name[NKINDS] = {
	"cancel_read (pipe)", "cancel_write (pipe)", "cancel_write (memfd)",
	"cancel_poll",        "cancel_wait",         "cancel_cond_wait",
	"unregister",
};

static long n_jobs[NKINDS];
static long w_raced[NKINDS];  /* destroy called before the caller returned */
static long w_busy;           /* destroy refused a blocked caller: EBUSY */
static long w_cond_held;      /* cond waiter canceled, mutex held by third */
static long w_held;           /* destroy returned while a signal held the
                               * caller inside its call */
static long n_nudges;
static bool blocking_on;
static unsigned kinds_mask = (1u << NKINDS) - 1;
/* CANCEL_STRESS_LATE_DESTROY=1: destroy only after the call returned (the
 * same work without the races, to time the mix on a library that fails
 * them). */
static bool late_destroy;

/* ------------------------------------------------------------------ */
/* Callback records                                                   */
/* ------------------------------------------------------------------ */

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
	int src;
	/* Timer probes: when the callback ran (ns). */
	uint64_t at;
};

static struct rec *
rec_new(void)
{
	return lf_alloc(sizeof(struct rec), LF_POISON);
}

/* Right after the unregister (or the destroy) that ended it. */
static void
rec_free(struct rec *r)
{
	lf_free(r, sizeof(*r), LF_POISON, "callback record");
}

/* Blocking-call job of one worker (see op_blocking). */
struct job {
	int kind;
	struct cancel_source *src;
	cancel_token tok;
	int fds[2];
	size_t len;
	struct rec *rec;     /* K_UNREG */
	bool feed;           /* K_READ/K_POLL: the partner writes a little */
	bool hold;           /* K_COND: the partner holds the mutex */
	bool nfds0;          /* K_POLL: no descriptor */
	bool nudge;          /* the partner signals the caller meanwhile */
	unsigned delay;      /* partner's spin before it acts */
	pthread_t caller;
	/* Destroyer and the caller's signal handler (seq_cst, Dekker):
	 * the handler reads src only between in_handler = 1 and
	 * destroyed = 0; the destroyer frees it only after destroyed = 1
	 * and in_handler = 0. */
	int destroying;
	int destroyed;
	int in_handler;
	int held;
	/* Caller. */
	int entered;
	int returned;
	int rc;
	size_t done;
	/* Partner. */
	long moved;
	int holding;
};

struct worker {
	int id;
	uint64_t rng;
	struct rec *recs[NRECS]; /* NULL: idle */
	long ops;
	/* Blocking calls. */
	struct job job;
	pthread_t helper[2];
	sem_t go[2];
	sem_t fin;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

/* The round's sources: roots then children. */
struct round_src {
	struct cancel_source *src;
	int parents[2];   /* root indices, -1 for none */
	int reason;       /* its own reason: every cancel call on it uses it */
	int wins;         /* cancel calls that returned true (fetch_add) */
	int seen;         /* the first reason an observer saw */
	int timed;        /* cancel_after was called on it */
};

static struct round_src rsrc[NSRC];
static pthread_barrier_t barrier;
static int stop;
static long rounds;

static void
rec_fn(void *arg)
{
	struct rec *r = arg;
	int was = __atomic_exchange_n(&r->running, 1, __ATOMIC_ACQ_REL);
	CHECK(was == 0, "callback %p running twice at once", (void *)r);
	int ran = ADD(&r->ran, 1);
	CHECK(ran == 0, "callback %p ran %d times", (void *)r, ran + 1);
	ADD(&n_callbacks, 1);
	ST(&r->at, tu_now_ns());
	if (r->self_unreg) {
		/* ENOENT when register ran it inline (never registered). */
		int rc = cancel_callback_try_unregister(&r->cb);
		CHECK(rc == EINPROGRESS || rc == ENOENT,
		      "try_unregister inside own callback: %d", rc);
		CHECK(!cancel_callback_unregister(&r->cb),
		      "self-unregister returned true");
	}
	if (r->cancel_other > 0) {
		struct round_src *o = &rsrc[r->cancel_other - 1];
		if (cancel_source_cancel_with(o->src, o->reason))
			ADD(&o->wins, 1);
	}
	if (r->spin > 0)
		spin(r->spin);
	ST(&r->running, 0);
}

/*
 * Whether @r is a reason round source @i may show: its own, ETIMEDOUT
 * when armed, or (children) the reason a parent was canceled with.
 */
static bool
round_reason_ok(int i, int r)
{
	if (r == rsrc[i].reason || (r == ETIMEDOUT && LD(&rsrc[i].timed)))
		return true;
	for (int j = 0; j < 2; j++) {
		int pi = rsrc[i].parents[j];
		if (pi >= 0 &&
		    cancel_token_reason(cancel_source_token(rsrc[pi].src)) == r)
			return true;
	}
	return false;
}

/* An observer saw reason @r on round source @i: one reason per source. */
static void
round_observe(int i, int r)
{
	if (r == 0)
		return;
	int none = 0;
	if (!__atomic_compare_exchange_n(&rsrc[i].seen, &none, r, false,
	                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		CHECK(none == r, "source %d seen with reasons %d and %d", i,
		      none, r);
	CHECK(round_reason_ok(i, r), "source %d: reason %d from nowhere", i,
	      r);
}

/* The owner's waiting unregister, with its oracles; frees the record. */
static void
rec_unregister(struct rec **rp)
{
	struct rec *r = *rp;
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
	rec_free(r);
	*rp = NULL;
}

static void
rec_try_unregister(struct rec **rp)
{
	struct rec *r = *rp;
	int rc = cancel_callback_try_unregister(&r->cb);
	int ran = LD(&r->ran);
	switch (rc) {
	case 0:
		CHECK(ran == 0, "try_unregister 0 but callback ran");
		break;
	case EALREADY:
		CHECK(ran == 1, "EALREADY but ran %d", ran);
		CHECK(LD(&r->running) == 0, "EALREADY while running");
		break;
	case EINPROGRESS:
		/* Still ours to reclaim: the waiting form must now wait. */
		rec_unregister(rp);
		return;
	default:
		CHECK(0, "try_unregister returned %d", rc);
		break;
	}
	rec_free(r);
	*rp = NULL;
}

static void
rec_prepare(struct rec *r, uint64_t *rng)
{
	unsigned k = below(rng, 100);
	r->spin = k < 50   ? 0
	          : k < 85 ? below(rng, 4000)
	                   : 10000 + below(rng, 30000);
	r->self_unreg = below(rng, 100) < 15;
	r->cancel_other = below(rng, 100) < 5 ? (int)below(rng, NSRC) + 1 : 0;
}

/* Register a new record on round source @si into *@rp (NULL if refused:
 * the record is then freed at once). */
static void
rec_register(struct rec **rp, int si, uint64_t *rng)
{
	struct rec *r = rec_new();
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
	} else {
		registered = cancel_callback_register(&r->cb, rec_fn, r, tok);
		if (!registered)
			CHECK(LD(&r->ran) == 1, "register false, fn not run");
	}
	if (!registered) {
		CHECK(cancel_token_is_canceled(tok),
		      "register refused on a live token");
		if (!pre)
			ADD(&w_reg_lost, 1);
		rec_free(r);
		*rp = NULL;
		return;
	}
	r->src = si;
	*rp = r;
}

/* ------------------------------------------------------------------ */
/* Operations                                                         */
/* ------------------------------------------------------------------ */

static void
op_cancel(uint64_t *rng)
{
	int si = (int)below(rng, NSRC);
	struct round_src *rs = &rsrc[si];
	bool won = cancel_source_cancel_with(rs->src, rs->reason);
	if (won)
		ADD(&rs->wins, 1);
	cancel_token tok = cancel_source_token(rs->src);
	CHECK(cancel_token_is_canceled(tok), "not canceled after cancel");
	int got = cancel_token_reason(tok);
	CHECK(got != 0, "canceled with reason 0");
	if (won)
		CHECK(got == rs->reason, "reason %d not %d", got, rs->reason);
	round_observe(si, got);
}

static void
op_deadline(uint64_t *rng)
{
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
	round_observe(si, reason);
	CHECK(cancel_token_check(tok) == (reason != 0 ? ECANCELED : 0) ||
	          reason == 0,
	      "check disagrees with reason");
	struct timespec ts;
	(void)cancel_token_deadline(tok, &ts);
	struct timespec dl = cancel_deadline_in(below(rng, 20) * 1000ull);
	int rc = cancel_wait(&dl, tok);
	CHECK(rc == ETIMEDOUT || rc == ECANCELED, "cancel_wait %d", rc);
	if (rc == ECANCELED) {
		CHECK(cancel_token_reason(tok) != 0, "ECANCELED, reason 0");
		round_observe(si, cancel_token_reason(tok));
	}
}

/* A child linked to one or two roots, created and destroyed right here
 * while the roots may be canceled on other threads. */
static void
op_linked(uint64_t *rng)
{
	struct cancel_source *child = lf_alloc(sizeof(*child), LF_PAGE);
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
	int own = new_reason(), wins = 0;
	bool armed = false;
	struct rec *r = NULL;
	if (below(rng, 2)) {
		r = rec_new();
		rec_prepare(r, rng);
		r->cancel_other = 0;
		if (!cancel_callback_register(&r->cb, rec_fn, r,
		                              cancel_source_token(child))) {
			CHECK(LD(&r->ran) == 1, "register false, fn not run");
			rec_free(r);
			r = NULL;
		}
	}
	if (below(rng, 10) == 0)
		wins += cancel_source_cancel_with(child, own);
	if (below(rng, 8) == 0) {
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
	int ran = 0;
	if (r != NULL) {
		bool removed = cancel_callback_unregister(&r->cb);
		CHECK(LD(&r->running) == 0, "child callback still running");
		ran = LD(&r->ran);
		CHECK(removed == (ran == 0),
		      "child callback: unregister %d, ran %d", removed, ran);
		rec_free(r);
	}
	int rc = cancel_source_destroy(child);
	CHECK(rc == 0, "child destroy %d", rc);
	cs = state_of(child);
	if (parent_done)
		CHECK(st_canceled(cs), "parent canceled, child not");
	if (st_canceled(cs)) {
		int reason = cancel__state_reason(cs);
		bool from_parent = false;
		for (size_t i = 0; i < n; i++) {
			cancel_token pt = cancel_source_token(rsrc[p[i]].src);
			if (cancel_token_reason(pt) == reason)
				from_parent = true;
		}
		CHECK(from_parent || (armed && reason == ETIMEDOUT) ||
		          reason == own,
		      "child canceled (reason %d) without a parent", reason);
		CHECK(wins == (reason == own),
		      "child: %d winning cancels, reason %d (own %d)", wins,
		      reason, own);
	} else {
		CHECK(wins == 0, "child won a cancel, not canceled");
	}
	if (ran == 1)
		CHECK(st_canceled(cs), "child callback ran, child live");
	src_free(child);
}

/* A source with a short deadline destroyed while the timer may fire. */
static void
op_timer_destroy(uint64_t *rng)
{
	struct cancel_source *s = src_new();
	struct rec *r = NULL;
	bool registered = false;
	/* Mode 0: no callback. 1: a callback, unregistered before the
	 * destroy. 2: a slow callback left to the firing; destroy is called
	 * while it runs and must wait for the firing to end. 3: the same,
	 * but a waiting unregister is called while it runs. */
	unsigned mode = below(rng, 4);
	if (mode > 0) {
		r = rec_new();
		rec_prepare(r, rng);
		r->cancel_other = 0;
		r->self_unreg = 0;
		if (mode >= 2)
			r->spin = 20000 + below(rng, 20000);
		registered = cancel_callback_register(
		    &r->cb, rec_fn, r, cancel_source_token(s));
		CHECK(registered, "register on a fresh source");
	}
	CHECK(cancel_source_cancel_after(s, below(rng, 51) * 1000ull) == 0,
	      "cancel_after");
	if (mode >= 2) {
		/* Until the callback runs (or 2 ms: a late timer). */
		uint64_t give_up = tu_now_ns() + 2000000;
		while (!LD(&r->running) && !LD(&r->ran) &&
		       tu_now_ns() < give_up)
			spin(50);
		if (mode == 2 && (LD(&r->running) || LD(&r->ran)))
			registered = false; /* popped: destroy may proceed */
		if (mode == 3) {
			/* Counts the window when it waits; frees r. */
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
		bool removed = cancel_callback_unregister(&r->cb);
		CHECK(LD(&r->running) == 0, "timer callback still running");
		CHECK(removed == (LD(&r->ran) == 0),
		      "timer callback: unregister %d, ran %d", removed,
		      LD(&r->ran));
		CHECK(removed || st_canceled(state_of(s)),
		      "callback ran, source not canceled");
		rec_free(r);
		r = NULL;
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
	src_free(s);
	if (r != NULL) {
		/* Left to the firing (mode 2), which destroy waited for: the
		 * callback ran to its end and never runs again. */
		CHECK(LD(&r->running) == 0,
		      "timer callback running after destroy");
		CHECK(LD(&r->ran) == 1 && st_canceled(post),
		      "popped callback did not run");
		rec_free(r);
	}
}

/*
 * A timer probe on a private source: a deadline @d away fires no earlier
 * than that and well within a generous bound (FAR_NS); anything else fails
 * the test.
 */
static void
timer_probe(uint64_t d)
{
	struct cancel_source *s = src_new();
	struct rec *r = rec_new();
	CHECK(cancel_callback_register(&r->cb, rec_fn, r,
	                               cancel_source_token(s)),
	      "probe register");
	uint64_t t0 = tu_now_ns();
	int rc = cancel_source_cancel_after(s, d);
	CHECK(rc == 0, "timer probe: cancel_after %d", rc);
	struct timespec far = cancel_deadline_in(FAR_NS);
	rc = cancel_wait(&far, cancel_source_token(s));
	CHECK(rc == ECANCELED, "timer probe: a %llu ns deadline %s",
	      (unsigned long long)d,
	      rc == ETIMEDOUT ? "never fired (20 s)" : "wait failed");
	CHECK(cancel_token_reason(cancel_source_token(s)) == ETIMEDOUT ||
	          rc != ECANCELED,
	      "timer probe: reason %d",
	      cancel_token_reason(cancel_source_token(s)));
	uint64_t woke = tu_now_ns();
	/* The firing time: when the callback ran, or (removed before it
	 * started: the wait woke first) no later than the wake-up. */
	bool removed = cancel_callback_unregister(&r->cb);
	uint64_t fired = removed ? woke : LD(&r->at);
	if (rc == ECANCELED)
		CHECK(fired >= t0 + d, "timer probe: fired %lld ns early",
		      (long long)(t0 + d - fired));
	rec_free(r);
	CHECK(cancel_source_destroy(s) == 0, "probe destroy");
	src_free(s);
	ADD(&n_probes, 1);
}

/* Register and unregister one record on a live root in a tight loop, so
 * that a cancel from another thread lands in the middle of a register. */
static void
op_register_burst(struct worker *w, uint64_t *rng)
{
	if (below(rng, 2)) {
		/* Against the library thread: a private source whose
		 * deadline lands in the middle of the loop. */
		struct cancel_source *s = src_new();
		cancel_token tok = cancel_source_token(s);
		cancel_source_cancel_after(s, 2000 + below(rng, 20000));
		uint64_t give_up = tu_now_ns() + 2000000;
		while (tu_now_ns() < give_up) {
			struct rec *r = rec_new();
			rec_prepare(r, rng);
			r->cancel_other = 0;
			r->spin = 0;
			bool pre = cancel_token_is_canceled(tok);
			if (pre) {
				rec_free(r);
				break;
			}
			bool ok = cancel_callback_register(&r->cb, rec_fn, r,
			                                   tok);
			if (!ok) {
				CHECK(LD(&r->ran) == 1, "refused, not run");
				ADD(&w_reg_lost, 1);
				rec_free(r);
				break;
			}
			rec_unregister(&r);
		}
		CHECK(cancel_source_destroy(s) == 0, "burst destroy");
		src_free(s);
		return;
	}
	int ri = (int)below(rng, NRECS);
	if (w->recs[ri] != NULL)
		return;
	int si = (int)below(rng, NROOTS);
	for (int i = 0; i < 1000; i++) {
		if (cancel_token_is_canceled(cancel_source_token(rsrc[si].src)))
			break;
		rec_register(&w->recs[ri], si, rng);
		if (w->recs[ri] == NULL)
			break;
		rec_unregister(&w->recs[ri]);
	}
}

/* Unregister an own callback that some cancel is running right now. */
static bool
op_hunt(struct worker *w)
{
	for (int i = 0; i < NRECS; i++) {
		struct rec *r = w->recs[i];
		if (r != NULL && LD(&r->running)) {
			rec_unregister(&w->recs[i]);
			return true;
		}
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* Blocking calls on private sources                                  */
/* ------------------------------------------------------------------ */

/* What cancel_write sends: read only, shared by every job. */
#define WBUF_LEN ((size_t)1 << 20)
static char wbuf[WBUF_LEN];

/*
 * The callback of K_UNREG: it runs inside the worker's cancel and stays
 * until the helper's unregister is parked on it. It must not return
 * before: an unregister that has read the callback's source but not yet
 * locked it is a call starting on that source, which may not race its
 * destroy (cancel.h, lifetime; tests/model/lifetime_flaw_unreg_early.pml),
 * and the worker destroys the source right after its cancel returns. The
 * helper calls unregister once it saw the callback running, so the park
 * comes; 10 s without it is a failure.
 */
static void
unreg_fn(void *arg)
{
	struct job *j = arg;
	struct rec *r = j->rec;
	int was = __atomic_exchange_n(&r->running, 1, __ATOMIC_ACQ_REL);
	CHECK(was == 0, "callback running twice at once");
	CHECK(ADD(&r->ran, 1) == 0, "callback ran twice");
	uint64_t give_up = tu_now_ns() + 10000000000ull;
	while (!(__atomic_load_n(&j->src->gen_, __ATOMIC_ACQUIRE) &
	         GEN_WAIT)) {
		CHECK(tu_now_ns() < give_up,
		      "the unregister never parked on its running callback");
		spin(100);
	}
	spin(r->spin);
	ST(&r->running, 0);
}

#define SQ_LD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define SQ_ST(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

/*
 * The caller's SIGUSR2 handler: the partner sends it again and again
 * while the call runs, so it lands anywhere in the library's code (and is
 * pending at every return from a system call, such as the futex wake a
 * leaving waiter makes for a destroy waiting on it). Once destroy was
 * called, the first time it finds the caller inside its call but no
 * longer counted as a waiter on the source, it holds the caller there
 * (300 us at most) until destroy returned: a library that stopped
 * counting the caller before its last touch of the source then reads
 * freed memory.
 */
static __thread struct job *tls_job;

static void
nudge_handler(int sig)
{
	(void)sig;
	int saved = errno;
	struct job *j = tls_job;
	if (j == NULL || j->held || LD(&j->returned)) {
		errno = saved;
		return;
	}
	bool left = false;
	SQ_ST(&j->in_handler, 1);
	if (SQ_LD(&j->destroying) && !SQ_LD(&j->destroyed))
		left = cancel__state_waiters(state_of(j->src)) == 0;
	SQ_ST(&j->in_handler, 0);
	if (left) {
		j->held = 1;
		uint64_t until = tu_now_ns() + 300000;
		while (SQ_LD(&j->destroying) && !SQ_LD(&j->destroyed) &&
		       tu_now_ns() < until)
			spin(100);
		if (SQ_LD(&j->destroyed) && !LD(&j->returned))
			ADD(&w_held, 1);
	}
	errno = saved;
}

/* Free the job's source once the handler cannot be reading it. */
static void
job_free_src(struct job *j)
{
	SQ_ST(&j->destroyed, 1);
	while (SQ_LD(&j->in_handler))
		sched_yield();
	src_free(j->src);
	j->src = NULL;
}

/* Helper 0: the call that blocks on the job's source. */
static void
job_call(struct worker *w, struct job *j)
{
	struct timespec far = cancel_deadline_in(FAR_NS);
	char buf[4096];
	int rc = 0;
	tls_job = j;
	switch (j->kind) {
	case K_READ:
		ST(&j->entered, 1);
		rc = cancel_read(j->fds[0], buf, sizeof(buf), &j->done, &far,
		                 j->tok);
		break;
	case K_WRITE_PIPE:
		ST(&j->entered, 1);
		rc = cancel_write(j->fds[1], wbuf, j->len, &j->done, &far,
		                  j->tok);
		break;
	case K_WRITE_FILE:
		ST(&j->entered, 1);
		rc = cancel_write(j->fds[0], wbuf, j->len, &j->done, &far,
		                  j->tok);
		break;
	case K_POLL: {
		struct pollfd p = {.fd = j->fds[0], .events = POLLIN};
		ST(&j->entered, 1);
		rc = cancel_poll(j->nfds0 ? NULL : &p, j->nfds0 ? 0 : 1, &far,
		                 j->tok);
		break;
	}
	case K_WAIT:
		ST(&j->entered, 1);
		rc = j->nfds0 ? cancel_sleep_until(&far, j->tok)
		              : cancel_wait(&far, j->tok);
		break;
	case K_COND:
		pthread_mutex_lock(&w->mu);
		ST(&j->entered, 1);
		rc = cancel_cond_wait(&w->cv, &w->mu, &far, j->tok);
		ST(&j->returned, 1);
		pthread_mutex_unlock(&w->mu);
		break;
	case K_UNREG: {
		struct rec *r = j->rec;
		while (!LD(&r->running) && !LD(&r->ran))
			sched_yield();
		ST(&j->entered, 1);
		bool removed = cancel_callback_unregister(&r->cb);
		CHECK(!removed, "unregister removed a callback that ran");
		CHECK(LD(&r->running) == 0 && LD(&r->ran) == 1,
		      "callback running after unregister");
		ST(&j->returned, 1);
		tls_job = NULL;
		rec_free(r);
		return;
	}
	default:
		break;
	}
	j->rc = rc;
	ST(&j->returned, 1);
	tls_job = NULL;
}

/* The partner's signals to the caller until its call returned. */
static void
job_nudge(struct job *j)
{
	if (!j->nudge)
		return;
	while (!LD(&j->entered))
		sched_yield();
	unsigned x = j->delay | 1;
	while (!LD(&j->returned)) {
		pthread_kill(j->caller, SIGUSR2);
		ADD(&n_nudges, 1);
		x = x * 1103515245u + 12345u;
		spin((x >> 16) % 3000);
	}
}

/* Helper 1: the partner that feeds, drains or holds the mutex. */
static void
job_partner(struct worker *w, struct job *j)
{
	char buf[8192];
	switch (j->kind) {
	case K_READ:
	case K_POLL:
		if (!j->feed) {
			job_nudge(j);
			return;
		}
		while (!LD(&j->entered))
			sched_yield();
		spin(j->delay);
		memset(buf, 'r', 64);
		{
			ssize_t n = write(j->fds[1], buf, 1 + j->delay % 64);
			CHECK(n > 0, "partner write");
			ST(&j->moved, (long)n);
		}
		job_nudge(j);
		return;
	case K_WRITE_PIPE:
		/* Drain until the worker closes the write end. */
		for (;;) {
			ssize_t n = read(j->fds[0], buf, sizeof(buf));
			if (n > 0) {
				ADD(&j->moved, n);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			CHECK(n == 0, "partner read %zd", n);
			return;
		}
	case K_COND:
		if (!j->hold) {
			job_nudge(j);
			return;
		}
		while (!LD(&j->entered))
			sched_yield();
		pthread_mutex_lock(&w->mu);
		ST(&j->holding, 1);
		/* Until the worker's cancel returned (2 ms at most), then a
		 * little more: the woken waiter blocks on mu meanwhile. */
		{
			uint64_t give_up = tu_now_ns() + 2000000;
			while (LD(&j->holding) == 1 && tu_now_ns() < give_up)
				spin(200);
		}
		spin(j->delay);
		ST(&j->holding, 3);
		pthread_mutex_unlock(&w->mu);
		return;
	default:
		job_nudge(j);
		return;
	}
}

struct helper_arg {
	struct worker *w;
	int role;
};

static struct helper_arg helper_args[NWORKERS][2];

static void *
helper_loop(void *arg)
{
	struct helper_arg *h = arg;
	struct worker *w = h->w;
	for (;;) {
		while (sem_wait(&w->go[h->role]) != 0)
			;
		if (LD(&stop))
			return NULL;
		if (h->role == 0)
			job_call(w, &w->job);
		else
			job_partner(w, &w->job);
		sem_post(&w->fin);
	}
}

/* Whether the caller is inside its call: counted as a waiter on the
 * source, or already returned. */
static bool
job_inside(struct job *j)
{
	return cancel__state_waiters(state_of(j->src)) != 0 ||
	       LD(&j->returned);
}

/* Until @pred: each one comes true once the call has started. */
#define AWAIT(pred)                                                          \
	do {                                                                 \
		while (!(pred))                                              \
			sched_yield();                                       \
	} while (0)

/* Destroy (retrying on EBUSY) and free at once. */
static void
job_destroy(struct job *j)
{
	uint64_t give_up = tu_now_ns() + 10000000000ull;
	int rc;
	SQ_ST(&j->destroying, 1);
	while ((rc = cancel_source_destroy(j->src)) == EBUSY) {
		if (tu_now_ns() > give_up)
			break;
		sched_yield();
	}
	CHECK(rc == 0, "%s: destroy after cancel %d", kind_name[j->kind], rc);
	if (rc == 0)
		job_free_src(j);
	/* Else leaked on purpose: the failure is reported. */
	j->src = NULL;
}

/*
 * One blocking call on a private heap source: helper 0 makes the call,
 * helper 1 plays the partner, this thread cancels, destroys and frees the
 * source once the call is under way.
 */
static void
op_blocking(struct worker *w, uint64_t *rng)
{
	struct job *j = &w->job;
	memset(j, 0, sizeof(*j));
	j->kind = (int)below(rng, NKINDS);
	if (!(kinds_mask & (1u << j->kind)))
		return;
	j->src = src_new();
	j->tok = cancel_source_token(j->src);
	j->fds[0] = j->fds[1] = -1;
	j->delay = below(rng, 4000);
	j->nfds0 = below(rng, 4) == 0;
#ifdef TU_TSAN
	/* ThreadSanitizer delivers a signal at the next interceptor the
	 * thread enters (a calloc of cmocka's, say) and then reports that
	 * call as signal-unsafe: the nudges run in the other builds. */
	j->nudge = false;
	(void)below(rng, 2);
#else
	j->nudge = below(rng, 2) == 0;
#endif
	j->caller = w->helper[0];
	int reason = new_reason(), wins = 0;
	switch (j->kind) {
	case K_READ:
	case K_POLL:
	case K_WRITE_PIPE:
		CHECK(pipe2(j->fds, O_CLOEXEC) == 0, "pipe2");
		j->feed = below(rng, 2);
		j->len = 16384 + below(rng, 512 * 1024);
		break;
	case K_WRITE_FILE:
		j->fds[0] = memfd_create("stress", MFD_CLOEXEC);
		CHECK(j->fds[0] >= 0, "memfd_create");
		j->len = 128 * 1024 + below(rng, WBUF_LEN - 128 * 1024);
		break;
	case K_COND:
		j->hold = below(rng, 2);
		break;
	case K_UNREG:
		j->rec = rec_new();
		j->rec->spin = below(rng, 3000);
		CHECK(cancel_callback_register(&j->rec->cb, unreg_fn, j,
		                               j->tok),
		      "register on a fresh source");
		break;
	default:
		break;
	}
	ADD(&n_jobs[j->kind], 1);
	sem_post(&w->go[0]);
	sem_post(&w->go[1]);

	/* Wait until the call is under way. */
	bool try_first = below(rng, 3) == 0;
	bool destroyed = false;
	switch (j->kind) {
	case K_READ:
	case K_POLL:
	case K_WAIT:
		AWAIT(LD(&j->entered) && job_inside(j));
		/* Fed: cancel right after the data, so that the caller's
		 * wake-up by the data and the cancel overlap. */
		if (j->feed)
			AWAIT(LD(&j->moved) > 0 || LD(&j->returned));
		break;
	case K_WRITE_PIPE:
		/* Bytes arrived: the writer is inside (it maybe ended). At
		 * least one: a call not yet started may not race destroy. */
		AWAIT(LD(&j->moved) >= (long)(j->delay * 16) + 1 ||
		      LD(&j->returned));
		break;
	case K_WRITE_FILE: {
		/* The file grew: the writer is inside (it maybe ended). */
		struct stat st;
		AWAIT(LD(&j->returned) ||
		      (fstat(j->fds[0], &st) == 0 && st.st_size > 0));
		try_first = false;
		break;
	}
	case K_COND:
		/* Our lock taken after entered was set: it is in the wait. */
		for (;;) {
			pthread_mutex_lock(&w->mu);
			bool in = LD(&j->entered) != 0;
			if (in && try_first && !LD(&j->returned)) {
				/* It cannot leave while we hold mu. */
				int rc = cancel_source_destroy(j->src);
				CHECK(rc == EBUSY,
				      "destroy with a cond waiter: %d", rc);
				if (rc == EBUSY)
					ADD(&w_busy, 1);
			}
			pthread_mutex_unlock(&w->mu);
			if (in)
				break;
			sched_yield();
		}
		try_first = false;
		if (j->hold)
			AWAIT(LD(&j->holding) != 0 || LD(&j->returned));
		break;
	case K_UNREG:
		try_first = false;
		break;
	default:
		break;
	}
	if (late_destroy) {
		try_first = false;
		if (j->kind != K_UNREG) {
			if (cancel_source_cancel_with(j->src, reason))
				wins++;
			if (j->kind == K_COND)
				ST(&j->holding, 2);
			AWAIT(LD(&j->returned));
		}
	}
	if (try_first) {
		/* Not canceled: EBUSY while the caller is inside; 0 only if
		 * the call already ended (it cannot for a wait). */
		SQ_ST(&j->destroying, 1);
		int rc = cancel_source_destroy(j->src);
		if (rc == EBUSY) {
			ADD(&w_busy, 1);
			SQ_ST(&j->destroying, 0);
		} else {
			CHECK(rc == 0, "%s: destroy first %d",
			      kind_name[j->kind], rc);
			CHECK(j->kind != K_WAIT,
			      "destroy returned %d with a thread waiting", rc);
			if (rc == 0) {
				destroyed = true;
				job_free_src(j);
			}
		}
	}
	if (!destroyed) {
		spin(below(rng, 2000));
		if (cancel_source_cancel_with(j->src, reason))
			wins++;
		if (late_destroy && j->kind == K_UNREG)
			AWAIT(LD(&j->returned));
		CHECK(wins == 1, "%s: the only cancel returned false",
		      kind_name[j->kind]);
		int got = cancel_token_reason(j->tok);
		CHECK(got == reason, "%s: reason %d, not %d",
		      kind_name[j->kind], got, reason);
		bool held = j->kind == K_COND && LD(&j->holding) == 1;
		if (j->kind == K_COND)
			ST(&j->holding, 2); /* the partner may let go */
		/* The race: destroy while the woken caller is still in. */
		if (LD(&j->entered) && !LD(&j->returned)) {
			ADD(&w_raced[j->kind], 1);
			if (held)
				ADD(&w_cond_held, 1);
		}
		job_destroy(j);
	}
	/* Both helpers done; the pipe reader ends at EOF, once the writer
	 * (the first to finish) returned. */
	while (sem_wait(&w->fin) != 0)
		;
	if (j->kind == K_WRITE_PIPE) {
		CHECK(LD(&j->returned), "pipe reader ended before the writer");
		close(j->fds[1]);
		j->fds[1] = -1;
	}
	while (sem_wait(&w->fin) != 0)
		;

	/* What the call returned. */
	int rc = j->rc;
	switch (j->kind) {
	case K_READ:
		CHECK(rc == 0 || rc == ECANCELED, "cancel_read %d", rc);
		if (rc == 0) {
			CHECK(j->done > 0 && (long)j->done <= LD(&j->moved),
			      "cancel_read 0, %zu bytes of %ld", j->done,
			      LD(&j->moved));
		} else {
			int left = 0;
			CHECK(j->done == 0, "canceled read moved %zu", j->done);
			CHECK(ioctl(j->fds[0], FIONREAD, &left) == 0 &&
			          left == LD(&j->moved),
			      "canceled read consumed data (%d of %ld left)",
			      left, LD(&j->moved));
		}
		break;
	case K_WRITE_PIPE:
	case K_WRITE_FILE:
		CHECK(rc == 0 || rc == ECANCELED, "%s %d", kind_name[j->kind],
		      rc);
		CHECK(rc == ECANCELED ? j->done <= j->len : j->done == j->len,
		      "%s: %d with %zu of %zu", kind_name[j->kind], rc, j->done,
		      j->len);
		if (j->kind == K_WRITE_PIPE) {
			CHECK(LD(&j->moved) == (long)j->done,
			      "pipe: wrote %zu, reader got %ld", j->done,
			      LD(&j->moved));
		} else {
			struct stat st;
			CHECK(fstat(j->fds[0], &st) == 0 &&
			          st.st_size == (off_t)j->done,
			      "memfd holds %lld, wrote %zu",
			      (long long)st.st_size, j->done);
		}
		break;
	case K_POLL:
		CHECK(rc == ECANCELED || (rc == 0 && j->feed && !j->nfds0),
		      "cancel_poll %d", rc);
		break;
	case K_WAIT:
		CHECK(rc == ECANCELED, "%s %d",
		      j->nfds0 ? "cancel_sleep_until" : "cancel_wait", rc);
		break;
	case K_COND:
		/* 0: a wake-up meant for an earlier job's waiter. */
		CHECK(rc == ECANCELED || rc == 0, "cancel_cond_wait %d", rc);
		break;
	default:
		break;
	}
	for (int i = 0; i < 2; i++)
		if (j->fds[i] >= 0)
			close(j->fds[i]);
	/* A source whose destroy failed (reported) is left, not freed. */
	j->src = NULL;
}

static void
worker_round(struct worker *w)
{
	uint64_t *rng = &w->rng;
	for (int i = 0; i < OPS_PER_ROUND; i++) {
		unsigned k = below(rng, 100);
		int ri = (int)below(rng, NRECS);
		/* Atomic only for report_progress. */
		__atomic_store_n(&w->ops, w->ops + 1, __ATOMIC_RELAXED);
		if (op_hunt(w))
			continue;
		if (k < 5) {
			op_register_burst(w, rng);
		} else if (k < 35) {
			if (w->recs[ri] == NULL)
				rec_register(&w->recs[ri],
				             (int)below(rng, NSRC), rng);
		} else if (k < 60) {
			if (w->recs[ri] != NULL)
				rec_unregister(&w->recs[ri]);
		} else if (k < 71) {
			if (w->recs[ri] != NULL)
				rec_try_unregister(&w->recs[ri]);
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
		} else if (k < 94 && blocking_on) {
			op_blocking(w, rng);
		} else if (k == 94 && below(rng, 8) == 0) {
			timer_probe(below(rng, 200) * 1000ull);
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
		struct cancel_source *s = lf_alloc(sizeof(*s), LF_PAGE);
		rsrc[i] = (struct round_src){.src = s,
		                             .parents = {-1, -1},
		                             .reason = new_reason()};
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

static void
shuffle(int *v, int n, uint64_t *rng)
{
	for (int i = n - 1; i > 0; i--) {
		int k = (int)below(rng, (unsigned)i + 1);
		int t = v[i];
		v[i] = v[k];
		v[k] = t;
	}
}

/* Workers are parked at the barrier; timers may still fire. */
static void
round_check_and_teardown(uint64_t *rng)
{
	/* A source whose cancel has finished ran every callback still
	 * registered (owner's view), each once. */
	for (int wi = 0; wi < NWORKERS; wi++) {
		for (int i = 0; i < NRECS; i++) {
			struct rec *r = workers[wi].recs[i];
			if (r == NULL)
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
	/* Unregister what is left in random order, each freed at once. */
	int order[NWORKERS * NRECS];
	for (int i = 0; i < NWORKERS * NRECS; i++)
		order[i] = i;
	shuffle(order, NWORKERS * NRECS, rng);
	for (int i = 0; i < NWORKERS * NRECS; i++) {
		struct rec **rp = &workers[order[i] / NRECS].recs[order[i] %
		                                                 NRECS];
		if (*rp != NULL)
			rec_unregister(rp);
	}
	/* Reasons and winning cancels, before anything is freed. */
	int final[NSRC];
	for (int i = 0; i < NSRC; i++) {
		uint64_t s = state_of(rsrc[i].src);
		final[i] = st_canceled(s) ? cancel__state_reason(s) : 0;
	}
	for (int i = 0; i < NSRC; i++) {
		int r = final[i], wins = LD(&rsrc[i].wins);
		int seen = LD(&rsrc[i].seen);
		CHECK(seen == 0 || seen == r,
		      "source %d observed with reason %d, ended with %d", i,
		      seen, r);
		if (r == rsrc[i].reason) {
			CHECK(wins == 1,
			      "source %d: %d cancel calls returned true", i,
			      wins);
			continue;
		}
		CHECK(wins == 0, "source %d: %d winning cancels, reason %d", i,
		      wins, r);
		if (r == 0)
			continue;
		bool ok = r == ETIMEDOUT && LD(&rsrc[i].timed);
		for (int j = 0; j < 2; j++) {
			int pi = rsrc[i].parents[j];
			if (pi >= 0 && final[pi] == r)
				ok = true;
		}
		CHECK(ok, "source %d canceled (reason %d) from nowhere", i, r);
	}
	/* Destroy in random order; a parent refuses (EBUSY) while a child
	 * lives and is tried again later. Each is freed at once. */
	int left[NSRC], nleft = NSRC;
	for (int i = 0; i < NSRC; i++)
		left[i] = i;
	shuffle(left, NSRC, rng);
	for (int pass = 0; nleft > 0 && pass <= NSRC; pass++) {
		int keep = 0;
		for (int k = 0; k < nleft; k++) {
			int i = left[k];
			int rc = cancel_source_destroy(rsrc[i].src);
			if (rc == EBUSY && i < NROOTS) {
				left[keep++] = i;
				continue;
			}
			CHECK(rc == 0, "round source %d destroy %d", i, rc);
			uint64_t s = state_of(rsrc[i].src);
			CHECK(!st_canceled(s) || st_done(s),
			      "destroyed source not done");
			src_free(rsrc[i].src);
			rsrc[i].src = NULL;
		}
		nleft = keep;
	}
	CHECK(nleft == 0, "%d round sources not destroyable", nleft);
}

static long
env_long(const char *name, long def)
{
	const char *e = getenv(name);
	if (e == NULL || *e == '\0')
		return def;
	long v = strtol(e, NULL, 0);
	return v >= 0 ? v : def;
}

/* The minimum hits of each window for a run of @ops operations. */
static long
window_min(long ops, long per_200k)
{
	long m = per_200k * ops / 200000;
	return m < 1 ? 1 : m;
}

struct window {
	const char *name;
	const long *hits;
	long per_200k;
	bool blocking;
	int kind; /* the blocking call it needs, -1: none or any */
};

/* Per 200,000 operations: a fifth to a tenth of what the loaded 2-core
 * machine hits (tests/README.md). */
static const struct window windows[] = {
	{"unregister waited", &w_unreg_waited, 100, false, -1},
	{"register lost", &w_reg_lost, 50, false, -1},
	{"child destroyed during parent cancel", &w_child_destroy, 20, false,
	 -1},
	{"timer fired during destroy", &w_timer_destroy, 100, false, -1},
	{"destroy raced a woken cancel_read", &w_raced[K_READ], 20, true,
	 K_READ},
	{"destroy raced a streaming cancel_write (pipe)",
	 &w_raced[K_WRITE_PIPE], 20, true, K_WRITE_PIPE},
	{"destroy raced cancel_write between memfd chunks",
	 &w_raced[K_WRITE_FILE], 20, true, K_WRITE_FILE},
	{"destroy raced a woken cancel_poll", &w_raced[K_POLL], 20, true,
	 K_POLL},
	{"destroy raced a woken cancel_wait", &w_raced[K_WAIT], 20, true,
	 K_WAIT},
	{"destroy raced a woken cancel_cond_wait", &w_raced[K_COND], 20, true,
	 K_COND},
	{"cond waiter canceled while a third thread held its mutex",
	 &w_cond_held, 5, true, K_COND},
	{"destroy raced a woken waiting unregister", &w_raced[K_UNREG], 10,
	 true, K_UNREG},
	{"destroy refused a blocked caller (EBUSY)", &w_busy, 20, true, -1},
	/* Reported, not required: with the whole call counted it is only
	 * the moment between the call's return and the caller's flag. */
	{"destroy returned while a signal held the caller in its call",
	 &w_held, 0, true, -1},
};
#define NWINDOWS (sizeof(windows) / sizeof(windows[0]))

/*
 * Whether every race window reached its minimum for a run of @ops
 * operations (read between rounds, when the workers are parked); @report:
 * name those below it.
 */
static bool
windows_met(long ops, bool report)
{
	bool all = true;
	for (size_t i = 0; i < NWINDOWS; i++) {
		if (windows[i].per_200k == 0 ||
		    (windows[i].blocking && !blocking_on))
			continue;
		if (windows[i].kind >= 0 &&
		    !(kinds_mask & (1u << windows[i].kind)))
			continue;
		long min = window_min(ops, windows[i].per_200k);
		long hits = LD(windows[i].hits);
		if (hits < min) {
			all = false;
			if (report)
				fprintf(stderr,
				        "stress: window \"%s\" hit %ld times, "
				        "minimum %ld\n",
				        windows[i].name, hits, min);
		}
	}
	return all;
}

/* When a fault or a sanitizer ends the run: how far it got. */
static void
report_progress(void)
{
	long ops = 0, jobs = 0;
	for (int i = 0; i < NWORKERS; i++)
		ops += __atomic_load_n(&workers[i].ops, __ATOMIC_RELAXED);
	char msg[200];
	int len = snprintf(msg, sizeof(msg), "stress: died after %ld ops,",
	                   ops);
	for (int k = 0; k < NKINDS && len > 0 && len < (int)sizeof(msg);
	     k++) {
		jobs = __atomic_load_n(&n_jobs[k], __ATOMIC_RELAXED);
		len += snprintf(msg + len, sizeof(msg) - (size_t)len, " %ld",
		                jobs);
	}
	if (len > 0 && len < (int)sizeof(msg) - 40)
		len += snprintf(msg + len, sizeof(msg) - (size_t)len,
		                " calls of each blocking kind\n");
	if (len > 0)
		(void)!write(2, msg, (size_t)len);
}

/* Extra time allowed for rounds beyond the planned ones (see below). */
#define EXTRA_NS (60ull * 1000000000ull)

static void
stress_core_races_keep_every_oracle(void **state)
{
	(void)state;
	seed = tu_seed("stress");
	uint64_t rng = (uint64_t)seed * 0x9e3779b97f4a7c15ull + 1;
	long total = env_long("CANCEL_STRESS_OPS", 200000);
	blocking_on = env_long("CANCEL_STRESS_BLOCKING", 1) != 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = nudge_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);
	kinds_mask &= (unsigned)env_long("CANCEL_STRESS_KINDS", 0x7f);
	late_destroy = env_long("CANCEL_STRESS_LATE_DESTROY", 0) != 0;
	lf_report_faults(report_progress);

	/* The timer must work: a 2 ms deadline fires, not early, and
	 * within 20 s (timer_probe fails the test otherwise). It starts the
	 * library thread, whose descriptor stays. */
	timer_probe(2000000);
	assert_int_equal(LD(&failures), 0);
	long live0 = cancel__test_live_objects();
	int fds0 = tu_fd_count();
	fprintf(stderr, "stress: %ld ops, %d workers, blocking calls %s\n",
	        total, NWORKERS, blocking_on ? "on" : "off");

	pthread_barrier_init(&barrier, NULL, NWORKERS + 1);
	pthread_t th[NWORKERS];
	for (int i = 0; i < NWORKERS; i++) {
		struct worker *w = &workers[i];
		w->id = i;
		w->rng = rnd(&rng) | 1;
		pthread_mutex_init(&w->mu, NULL);
		pthread_cond_init(&w->cv, NULL);
		sem_init(&w->fin, 0, 0);
		for (int h = 0; h < 2; h++) {
			sem_init(&w->go[h], 0, 0);
			helper_args[i][h] = (struct helper_arg){w, h};
			w->helper[h] = tu_spawn(helper_loop, &helper_args[i][h]);
		}
		th[i] = tu_spawn(worker_main, w);
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
			if (late_destroy || windows_met(total, false))
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
		round_check_and_teardown(&rng);
		CHECK(cancel__test_live_objects() == live0,
		      "round %ld: live objects %ld, expected %ld", rounds,
		      cancel__test_live_objects(), live0);
		CHECK(lf_bad() == 0, "round %ld: %ld freed blocks written",
		      rounds, lf_bad());
		pthread_barrier_wait(&barrier); /* next */
		if (LD(&failures) > 20)
			break;
	}
	ST(&stop, 1);
	pthread_barrier_wait(&barrier);
	for (int i = 0; i < NWORKERS; i++) {
		tu_join(th[i]);
		n_ops += workers[i].ops;
		for (int h = 0; h < 2; h++)
			sem_post(&workers[i].go[h]);
		for (int h = 0; h < 2; h++) {
			tu_join(workers[i].helper[h]);
			sem_destroy(&workers[i].go[h]);
		}
		sem_destroy(&workers[i].fin);
		pthread_mutex_destroy(&workers[i].mu);
		pthread_cond_destroy(&workers[i].cv);
	}
	pthread_barrier_destroy(&barrier);
	timer_probe(2000000);
	lf_drain();
	double secs = (double)(tu_now_ns() - t0) / 1e9;

	if (extra_rounds > 0)
		fprintf(stderr, "stress: %ld extra rounds to reach the race "
		                "window minimums\n",
		        extra_rounds);
	long jobs = 0;
	for (int k = 0; k < NKINDS; k++)
		jobs += n_jobs[k];
	fprintf(stderr,
	        "stress: %ld rounds, %ld ops, %ld callbacks run, %ld blocking "
	        "calls (%ld signals to them), %ld timer probes, %ld blocks "
	        "freed in %.2f s\n",
	        rounds, n_ops, n_callbacks, jobs, n_nudges, n_probes,
	        lf_freed(), secs);
	fprintf(stderr, "stress: windows hit:");
	for (size_t i = 0; i < NWINDOWS; i++)
		fprintf(stderr, "%s %s %ld", i == 0 ? "" : ",",
		        windows[i].name, LD(windows[i].hits));
	fprintf(stderr, "\nstress: blocking calls:");
	for (int k = 0; k < NKINDS; k++)
		fprintf(stderr, "%s %s %ld", k == 0 ? "" : ",", kind_name[k],
		        n_jobs[k]);
	fputc('\n', stderr);

	assert_int_equal(LD(&failures), 0);
	assert_int_equal(lf_bad(), 0);
	assert_true(n_ops > 0);
	assert_int_equal(cancel__test_live_objects(), live0);
	assert_int_equal(tu_fd_count(), fds0);
	/* Each window must have been exercised for real. */
	assert_true(windows_met(total, true));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(stress_core_races_keep_every_oracle),
	};
	return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
