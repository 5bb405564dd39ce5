/*
 * libFuzzer target: one byte-coded sequence of API calls split over two
 * threads that race on shared sources. Built with ThreadSanitizer
 * (clang -fsanitize=fuzzer,thread works with clang 14) or AddressSanitizer.
 *
 * No interleaving can be predicted, so the checks are the contract's
 * oracles, as in tests/test_stress.c: a callback runs at most once; an
 * unregister returns true exactly when the callback never ran; after a
 * waiting unregister returns the callback is not running and never runs
 * again; at quiescence a canceled source has run every callback still
 * registered on it; a child linked to a parent whose cancel finished before
 * the child's destroy is canceled; everything destroyed, the live-object
 * count and the /proc/self/fd table are back where they started.
 *
 * Reasons: each shared source has a reason of its own that every cancel
 * call on it uses; exactly one such call returns true (fetch_add) when it
 * ends canceled with it, none when its deadline (ETIMEDOUT) won, and every
 * observer sees one reason per source; a child shows a parent's reason or
 * its own deadline's.
 *
 * Hang-up watches: each worker may watch a socketpair end for one shared
 * source, hang the peer up (close, or a half-close), stop the watch, and
 * wait on a source with a short deadline, which takes a watch over when
 * the source has no callbacks (src/watch.c, "A waiter watches for
 * itself"). A watched source may also end with ECONNRESET. Watches are
 * heap blocks freed right after their stop.
 *
 * Lifetime: sources and callback records are heap blocks of their own
 * (tests/lifetime.h) freed right after the destroy or unregister that ends
 * them returns (records mid-input, by the worker that owns them; the shared
 * sources at the end, in an order the input picks).
 *
 * The two workers are started once and reused (thread creation would cost
 * more than an input); a hand-off starts and ends each input. Operations
 * alternate: even-numbered ones go to worker 0, odd ones to worker 1.
 */
#include "cancel.h"
#include "internal.h"
#include "../tests/lifetime.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef FUZZ_THREADS_ENTRY
#define FUZZ_THREADS_ENTRY LLVMFuzzerTestOneInput
#endif

#define TNS 3        /* shared sources */
#define TNR 4        /* callback records per worker */
#define TMAXOPS 128  /* per worker */

static void
thr_fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fuzz_threads: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#define TCHECK(cond, msg)                                                    \
	do {                                                                 \
		if (!(cond))                                                 \
			thr_fail("%s (line %d)", (msg), __LINE__);           \
	} while (0)

#define LD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* ------------------------------------------------------------------ */
/* Records                                                            */
/* ------------------------------------------------------------------ */

struct trec {
	struct cancel_callback cb;
	int running;   /* atomic */
	int ran;       /* atomic */
	int action;    /* set before register, read by the callback */
	/* owner only */
	int src;       /* -1: NONE token */
};

static struct cancel_source *tsrc[TNS];
/* Per shared source: its reason, winning cancels, the reason observers
 * saw first, whether a deadline was armed. */
static int t_wins[TNS];
static int t_seen[TNS];
static int t_timed[TNS];
static int t_watched[TNS]; /* a watch was started on it (atomic) */

static int
t_reason(int s)
{
	return 200 + s;
}

static void
t_observe(int s, int r)
{
	if (r == 0)
		return;
	TCHECK(r == t_reason(s) ||
	           (r == ETIMEDOUT && __atomic_load_n(&t_timed[s],
	                                              __ATOMIC_ACQUIRE)) ||
	           (r == ECONNRESET && __atomic_load_n(&t_watched[s],
	                                               __ATOMIC_ACQUIRE)),
	       "reason from nowhere");
	int none = 0;
	if (!__atomic_compare_exchange_n(&t_seen[s], &none, r, false,
	                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		TCHECK(none == r, "two reasons seen on one source");
}

static void
t_cancel(int s)
{
	if (cancel_source_cancel_with(tsrc[s], t_reason(s)))
		__atomic_fetch_add(&t_wins[s], 1, __ATOMIC_ACQ_REL);
	int r = cancel_token_reason(cancel_source_token(tsrc[s]));
	TCHECK(r != 0, "canceled without a reason");
	t_observe(s, r);
}

/*
 * The descriptors of the kinds the library makes (eventfds and other
 * anonymous inodes; pipes too without a sanitizer) in /proc/self/fd: the
 * sanitizer runtimes and libFuzzer open and close files and pipes of
 * their own at any time, so those are not counted.
 */
static int
t_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char path[300], target[64];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		if (strncmp(target, "anon_inode:", 11) == 0)
			n++;
#if !defined(LF_ASAN) && !defined(LF_TSAN)
		/* (The sanitizers talk to their symbolizer over pipes.) */
		else if (strncmp(target, "pipe:", 5) == 0)
			n++;
#endif
	}
	closedir(d);
	return n;
}

/*
 * Deadlines per input: each one is a round trip through the library
 * thread (and a destroy may wait for its firing), which costs more than
 * the rest of an input; a few keep the fuzzer fast.
 */
#define TMAXTIMERS 2
static int t_timers;

static bool
timer_budget(void)
{
	return __atomic_fetch_add(&t_timers, 1, __ATOMIC_RELAXED) < TMAXTIMERS;
}

static void
trec_fn(void *arg)
{
	struct trec *r = arg;
	TCHECK(__atomic_exchange_n(&r->running, 1, __ATOMIC_ACQ_REL) == 0,
	       "callback running twice at once");
	TCHECK(__atomic_fetch_add(&r->ran, 1, __ATOMIC_ACQ_REL) == 0,
	       "callback ran twice");
	switch (r->action & 3) {
	case 1:
		TCHECK(!cancel_callback_unregister(&r->cb),
		       "self-unregister returned true");
		break;
	case 2:
		t_cancel((r->action >> 2) % TNS);
		break;
	default:
		break;
	}
	ST(&r->running, 0);
}

static struct trec *
trec_new(void)
{
	return lf_alloc(sizeof(struct trec), LF_POISON);
}

/* Right after the call that ended its registration returned: a later
 * run shows as a use after free (ASan) or broken poison. */
static void
trec_free(struct trec **rp)
{
	lf_free(*rp, sizeof(**rp), LF_POISON, "callback record");
	*rp = NULL;
}

static void
trec_register(struct trec **rp, int s, int action, bool try)
{
	struct trec *r = trec_new();
	*rp = r;
	r->action = action;
	cancel_token tok = s < 0 ? CANCEL_TOKEN_NONE
	                         : cancel_source_token(tsrc[s]);
	bool ok;
	if (try) {
		int rc = cancel_callback_try_register(&r->cb, trec_fn, r, tok);
		TCHECK(rc == 0 || rc == ECANCELED, "try_register result");
		TCHECK(rc == 0 || LD(&r->ran) == 0,
		       "try_register ran the callback");
		ok = rc == 0;
	} else {
		ok = cancel_callback_register(&r->cb, trec_fn, r, tok);
		TCHECK(ok || LD(&r->ran) == 1, "register false, fn not run");
	}
	if (!ok) {
		TCHECK(cancel_token_is_canceled(tok), "refused on live token");
		trec_free(rp);
		return;
	}
	r->src = s;
}

static void
trec_unregister(struct trec **rp)
{
	struct trec *r = *rp;
	bool removed = cancel_callback_unregister(&r->cb);
	TCHECK(LD(&r->running) == 0, "callback running after unregister");
	int ran = LD(&r->ran);
	TCHECK(removed == (ran == 0), "unregister result vs ran");
	trec_free(rp);
}

static void
trec_try_unregister(struct trec **rp)
{
	struct trec *r = *rp;
	int rc = cancel_callback_try_unregister(&r->cb);
	switch (rc) {
	case 0:
		TCHECK(LD(&r->ran) == 0, "try_unregister 0 but ran");
		trec_free(rp);
		break;
	case EALREADY:
		TCHECK(LD(&r->ran) == 1 && LD(&r->running) == 0,
		       "EALREADY but not completed");
		trec_free(rp);
		break;
	case EINPROGRESS:
		trec_unregister(rp);
		break;
	default:
		thr_fail("try_unregister returned %d", rc);
	}
}

/* ------------------------------------------------------------------ */
/* Workers                                                            */
/* ------------------------------------------------------------------ */

/* A worker's hang-up watch: @s watched for source @src, @c its peer. */
struct twatch {
	struct cancel_watch *w; /* NULL: none (an lf_alloc block) */
	int s;
	int c;   /* -1 once closed */
	int src;
};

struct tworker {
	struct twatch watch;
	struct trec *recs[TNR]; /* NULL: not registered */
	const uint8_t *ops[TMAXOPS];
	int nops;
	pthread_t th;
};

static struct tworker tw[2];
static pthread_once_t tonce = PTHREAD_ONCE_INIT;
/*
 * Hand-off: the main thread bumps t_gen to start an input and waits for
 * t_done to reach 2. Waiting spins with sched_yield() for a while (a
 * futex round trip per input would halve the execution rate), then
 * sleeps on t_cv so that idle workers cost nothing.
 */
static unsigned t_gen;
static unsigned t_done;
static pthread_mutex_t t_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t t_cv = PTHREAD_COND_INITIALIZER;

static void
t_await(const unsigned *word, unsigned differs_from, unsigned at_least)
{
	for (int i = 0; i < 2000; i++) {
		unsigned v = LD(word);
		if (at_least ? v >= at_least : v != differs_from)
			return;
		sched_yield();
	}
	pthread_mutex_lock(&t_mu);
	for (;;) {
		unsigned v = LD(word);
		if (at_least ? v >= at_least : v != differs_from)
			break;
		pthread_cond_wait(&t_cv, &t_mu);
	}
	pthread_mutex_unlock(&t_mu);
}

static void
t_bump(unsigned *word)
{
	pthread_mutex_lock(&t_mu);
	__atomic_fetch_add(word, 1, __ATOMIC_ACQ_REL);
	pthread_cond_broadcast(&t_cv);
	pthread_mutex_unlock(&t_mu);
}

/* A child linked to shared sources, created and destroyed here. */
static void
t_linked(uint8_t a, uint8_t b)
{
	struct cancel_source *c = lf_alloc(sizeof(*c), LF_PAGE);
	int p0 = a % TNS, p1 = (a / TNS) % TNS;
	cancel_token toks[2] = {cancel_source_token(tsrc[p0]),
	                        cancel_source_token(tsrc[p1])};
	size_t n = (b & 1) ? 2 : 1;
	TCHECK(cancel_source_init_linked(c, toks, n) == 0, "init_linked");
	struct trec *r = NULL;
	int snap = 0;
	bool armed = false;
	if (b & 2) {
		r = trec_new();
		if (!cancel_callback_register(&r->cb, trec_fn, r,
		                              cancel_source_token(c))) {
			TCHECK(LD(&r->ran) == 1, "register false, fn not run");
			snap = 1;
			trec_free(&r);
		}
	}
	if ((b & 4) && timer_budget()) {
		armed = true;
		TCHECK(cancel_source_cancel_after(c, 0) == 0, "cancel_after");
	}
	bool parent_done = false;
	for (size_t i = 0; i < n; i++) {
		uint64_t s = LD(&tsrc[i == 0 ? p0 : p1]->state_);
		if ((s & CANCEL__S_CANCELED) && (s & CANCEL__S_DONE))
			parent_done = true;
	}
	if (r != NULL) {
		bool removed = cancel_callback_unregister(&r->cb);
		TCHECK(LD(&r->running) == 0, "child callback running");
		snap = LD(&r->ran);
		TCHECK(removed == (snap == 0), "child unregister");
		trec_free(&r);
	}
	TCHECK(cancel_source_destroy(c) == 0, "child destroy");
	uint64_t cs = LD(&c->state_);
	if (parent_done)
		TCHECK(cs & CANCEL__S_CANCELED, "parent canceled, child not");
	if (snap == 1)
		TCHECK(cs & CANCEL__S_CANCELED, "child fn ran, child live");
	if (cs & CANCEL__S_CANCELED) {
		/* A parent's reason (the one it ended with) or its own
		 * deadline's. */
		int reason = cancel__state_reason(cs);
		int r0 = cancel_token_reason(toks[0]);
		int r1 = n == 2 ? cancel_token_reason(toks[1]) : 0;
		TCHECK(reason == r0 || reason == r1 ||
		           (armed && reason == ETIMEDOUT),
		       "child reason from nowhere");
	}
	lf_free(c, sizeof(*c), LF_PAGE, "child source");
}

static void t_unwatch(struct twatch *x);

/* Watch a new socketpair's end for source @s (@how bit 0: ignore a
 * half-close). */
static void
t_watch(struct twatch *x, int s, unsigned how)
{
	int sv[2];
	TCHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0,
	       "socketpair");
	x->w = lf_alloc(sizeof(*x->w), LF_POISON);
	memset(x->w, 0, sizeof(*x->w));
	x->s = sv[0];
	x->c = sv[1];
	x->src = s;
	ST(&t_watched[s], 1);
	int rc = cancel_watch_hangup(
	    x->w, x->s, (how & 1) ? CANCEL_WATCH_IGNORE_HALF_CLOSE : 0u,
	    tsrc[s]);
	TCHECK(rc == 0 || rc == ECANCELED, "cancel_watch_hangup");
	if (rc == ECANCELED) {
		TCHECK(cancel_token_is_canceled(cancel_source_token(tsrc[s])),
		       "ECANCELED from a watch of a live source");
		t_unwatch(x);
	}
}

/* Stop @x's watch, free it at once, close both ends. */
static void
t_unwatch(struct twatch *x)
{
	cancel_watch_stop(x->w);
	lf_free(x->w, sizeof(*x->w), LF_POISON, "watch");
	x->w = NULL;
	close(x->s);
	if (x->c >= 0)
		close(x->c);
	x->c = -1;
}

/*
 * A worker's first polled wait makes its wake-up descriptor (kept until
 * the thread exits) and the first watch the library's epoll descriptor:
 * both before the first input counts descriptors.
 */
static void
t_warm_watch(void)
{
	int sv[2];
	struct cancel_source *src = lf_alloc(sizeof(*src), LF_PAGE);
	struct cancel_watch *w = lf_alloc(sizeof(*w), LF_PAGE);
	cancel_source_init(src);
	memset(w, 0, sizeof(*w));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 ||
	    cancel_watch_hangup(w, sv[0], 0, src) != 0)
		abort();
	/* A deadline that passed before the wait began (a slow sanitized
	 * start) does not block: wait until this thread has its
	 * descriptor. */
	for (int i = 0; i < 100 && cancel__test_watch_wake_fd() < 0; i++) {
		struct timespec dl = cancel_deadline_in(20000000);
		if (cancel_wait(&dl, cancel_source_token(src)) != ETIMEDOUT)
			abort();
	}
	if (cancel__test_watch_wake_fd() < 0 || !cancel_watch_stop(w) ||
	    cancel_source_destroy(src) != 0)
		abort();
	close(sv[0]);
	close(sv[1]);
	lf_free(w, sizeof(*w), LF_PAGE, "warm-up watch");
	lf_free(src, sizeof(*src), LF_PAGE, "warm-up source");
}

/* The watch operations: @k 0 watch (@arg bit 0: ignore a half-close),
 * 1 hang the peer up (@arg bit 0: half-close only), 2 stop, 3 wait up to
 * @arg * 5 us on source @s (a takeover when it has no callbacks). */
static void
t_watch_op(struct tworker *w, int s, unsigned k, unsigned arg)
{
	struct twatch *x = &w->watch;
	switch (k) {
	case 0:
		if (x->w == NULL)
			t_watch(x, s, arg);
		break;
	case 1:
		if (x->w != NULL && x->c >= 0) {
			if (arg & 1) {
				shutdown(x->c, SHUT_WR);
			} else {
				close(x->c);
				x->c = -1;
			}
		}
		break;
	case 2:
		if (x->w != NULL)
			t_unwatch(x);
		break;
	default: {
		struct timespec dl = cancel_deadline_in(arg * 5000u);
		cancel_token t = cancel_source_token(tsrc[s]);
		int rc = cancel_wait(&dl, t);
		TCHECK(rc == ECANCELED || rc == ETIMEDOUT, "watched wait");
		if (rc == ECANCELED)
			t_observe(s, cancel_token_reason(t));
		break;
	}
	}
}

static void
t_op(struct tworker *w, const uint8_t *d)
{
	uint8_t op = d[0], a = d[1];
	struct trec **r = &w->recs[a % TNR];
	int s = (a >> 2) % TNS;
	switch (op % 11) {
	case 0:
	case 1:
		if (*r == NULL)
			trec_register(r, (a >> 2) % (TNS + 1) == TNS ? -1 : s,
			              op >> 4, op % 10 == 1);
		break;
	case 2:
		if (*r != NULL)
			trec_unregister(r);
		break;
	case 3:
		if (*r != NULL)
			trec_try_unregister(r);
		break;
	case 4:
		t_cancel(s);
		break;
	case 5:
		if (timer_budget()) {
			__atomic_store_n(&t_timed[s], 1, __ATOMIC_RELEASE);
			uint64_t ns = (op >> 4) * 1000u;
			TCHECK(cancel_source_cancel_after(tsrc[s], ns) == 0,
			       "cancel_after");
		}
		break;
	case 6:
		t_linked(a, op >> 4);
		break;
	case 7: {
		int fd;
		TCHECK(cancel_token_fd(cancel_source_token(tsrc[s]), &fd) == 0,
		       "token_fd");
		break;
	}
	case 8: {
		cancel_token t = cancel_source_token(tsrc[s]);
		struct timespec past = {0, 0};
		int rc = cancel_wait(&past, t);
		TCHECK(rc == ECANCELED || rc == ETIMEDOUT, "wait");
		if (rc == ECANCELED) {
			TCHECK(cancel_token_reason(t) != 0,
			       "ECANCELED, reason 0");
			t_observe(s, cancel_token_reason(t));
		}
		break;
	}
	case 9:
		t_watch_op(w, s, (op >> 4) & 3u, (unsigned)op >> 6);
		break;
	default:
		if (*r != NULL && LD(&(*r)->running))
			trec_unregister(r);
		break;
	}
}

static void *
t_main(void *arg)
{
	struct tworker *w = arg;
	unsigned gen = 0;
	t_warm_watch();
	t_bump(&t_done);
	for (;;) {
		t_await(&t_gen, gen, 0);
		gen++;
		for (int i = 0; i < w->nops; i++)
			t_op(w, w->ops[i]);
		t_bump(&t_done);
	}
	return NULL;
}

static void
t_start(void)
{
	/* The library thread (and its descriptor) before the first input
	 * counts descriptors. */
	if (cancel_signal_prepare() != 0)
		abort();
	struct cancel_source *warm = lf_alloc(sizeof(*warm), LF_PAGE);
	cancel_source_init(warm);
	if (cancel_source_cancel_after(warm, 0) != 0 ||
	    cancel_wait(NULL, cancel_source_token(warm)) != ECANCELED ||
	    cancel_source_destroy(warm) != 0)
		abort();
	lf_free(warm, sizeof(*warm), LF_PAGE, "warm-up source");
	for (int i = 0; i < 2; i++) {
		for (int j = 0; j < TNR; j++)
			tw[i].recs[j] = NULL;
		tw[i].watch.w = NULL;
		if (pthread_create(&tw[i].th, NULL, t_main, &tw[i]) != 0)
			abort();
	}
	t_await(&t_done, 0, 2); /* both warmed up */
}

/* ------------------------------------------------------------------ */
/* One input                                                          */
/* ------------------------------------------------------------------ */

int FUZZ_THREADS_ENTRY(const uint8_t *data, size_t size);

int
FUZZ_THREADS_ENTRY(const uint8_t *data, size_t size)
{
	pthread_once(&tonce, t_start);
	long live0 = cancel__test_live_objects();
	int fds0 = t_fd_count();
	for (int i = 0; i < TNS; i++) {
		tsrc[i] = lf_alloc(sizeof(*tsrc[i]), LF_PAGE);
		cancel_source_init(tsrc[i]);
		t_wins[i] = t_seen[i] = t_timed[i] = t_watched[i] = 0;
	}
	tw[0].nops = tw[1].nops = 0;
	__atomic_store_n(&t_timers, 0, __ATOMIC_RELAXED);
	for (size_t pos = 0, k = 0; pos + 1 < size; pos += 2, k++) {
		struct tworker *w = &tw[k & 1];
		if (w->nops < TMAXOPS)
			w->ops[w->nops++] = data + pos;
	}

	ST(&t_done, 0);
	t_bump(&t_gen);          /* go */
	t_await(&t_done, 0, 2);  /* both done */

	/* Quiescent (but for deadlines): finished cancels ran everything. */
	for (int i = 0; i < 2; i++) {
		for (int j = 0; j < TNR; j++) {
			struct trec *r = tw[i].recs[j];
			if (r == NULL || r->src < 0)
				continue;
			uint64_t s = LD(&tsrc[r->src]->state_);
			if ((s & CANCEL__S_CANCELED) && (s & CANCEL__S_DONE))
				TCHECK(LD(&r->ran) == 1,
				       "canceled source left a callback unrun");
		}
	}
	for (int i = 0; i < TNS; i++)
		cancel_source_cancel_after(tsrc[i], CANCEL_NEVER);
	for (int i = 0; i < 2; i++)
		if (tw[i].watch.w != NULL)
			t_unwatch(&tw[i].watch);
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < TNR; j++)
			if (tw[i].recs[j] != NULL)
				trec_unregister(&tw[i].recs[j]);
	/* Reasons and winning cancels. */
	for (int i = 0; i < TNS; i++) {
		uint64_t st = LD(&tsrc[i]->state_);
		int r = (st & CANCEL__S_CANCELED) ? cancel__state_reason(st) : 0;
		int wins = LD(&t_wins[i]), seen = LD(&t_seen[i]);
		TCHECK(seen == 0 || seen == r, "observers saw another reason");
		if (r == t_reason(i)) {
			TCHECK(wins == 1, "not exactly one winning cancel");
		} else {
			TCHECK(wins == 0, "a winning cancel, reason lost");
			TCHECK(r == 0 || (r == ETIMEDOUT && LD(&t_timed[i])) ||
			           (r == ECONNRESET && LD(&t_watched[i])),
			       "canceled with a reason from nowhere");
		}
	}
	/* Destroy and free in an order the input picks. */
	unsigned rot = size > 0 ? data[0] % TNS : 0;
	bool rev = size > 1 && (data[1] & 1);
	for (int k = 0; k < TNS; k++) {
		int i = (int)((rot + (unsigned)(rev ? TNS - 1 - k : k)) % TNS);
		TCHECK(cancel_source_destroy(tsrc[i]) == 0, "destroy");
		lf_free(tsrc[i], sizeof(*tsrc[i]), LF_PAGE, "source");
		tsrc[i] = NULL;
	}
	if (cancel__test_live_objects() != live0)
		thr_fail("live objects %ld, expected %ld",
		         cancel__test_live_objects(), live0);
	if (t_fd_count() != fds0) {
		/* Show them before failing. */
		DIR *d = opendir("/proc/self/fd");
		struct dirent *e;
		while (d != NULL && (e = readdir(d)) != NULL) {
			char path[300], target[64];
			snprintf(path, sizeof(path), "/proc/self/fd/%s",
			         e->d_name);
			ssize_t len = readlink(path, target, sizeof(target) - 1);
			if (len > 0) {
				target[len] = '\0';
				fprintf(stderr, "fuzz_threads: fd %s: %s\n",
				        e->d_name, target);
			}
		}
		if (d != NULL)
			closedir(d);
		thr_fail("descriptors %d, expected %d", t_fd_count(), fds0);
	}
	if (lf_bad() != 0)
		thr_fail("%ld freed blocks written after their free", lf_bad());
	return 0;
}
