/*
 * libFuzzer target: byte-coded sequences of API calls on one thread,
 * checked call by call against a reference model.
 *
 * A few source slots (plain or linked to other slots), a few callback
 * slots, links and zero-length deadlines. The model predicts every return
 * value, every source's canceled flag and reason, the order in which
 * callbacks run (last registered first, links propagating inline) and
 * what callbacks do from inside (unregister themselves or others,
 * try_unregister, cancel sources, register other callbacks, destroy
 * sources, their own included, which then frees them). Any
 * disagreement aborts with a description.
 *
 * Sources and callback records live in heap blocks of their own
 * (tests/lifetime.h), freed right after the destroy or the unregister that
 * ends them returns: ASan builds report a later touch; other builds fault
 * on a source's protected pages or find a record's poison overwritten.
 * At the end of every input
 * everything is unregistered and destroyed, and the live-object count
 * (heap blocks and descriptors held by the library) must be back where it
 * started.
 *
 * Input: a sequence of operations, one opcode byte and up to three
 * argument bytes each (see run_op()).
 *
 * Build: fuzz/run.sh (libFuzzer), or the replay tests in tests/ (gcc).
 */
#include "cancel.h"
#include "internal.h"
#include "../tests/lifetime.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_API_ENTRY
#define FUZZ_API_ENTRY LLVMFuzzerTestOneInput
#endif

#define NS 5     /* source slots */
#define NC 8     /* callback slots */
#define MAXLOG 512
#define MAXSTACK 64
#define NEVER CANCEL_NEVER

/* ------------------------------------------------------------------ */
/* Failure                                                            */
/* ------------------------------------------------------------------ */

static long api_opno;

static void
api_fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fuzz_api: op %ld: ", api_opno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#define EXPECT_EQ(real, model, what)                                         \
	do {                                                                 \
		long r_ = (long)(real), m_ = (long)(model);                  \
		if (r_ != m_)                                                \
			api_fail("%s: library %ld, model %ld", (what), r_,   \
			         m_);                                        \
	} while (0)

/* ------------------------------------------------------------------ */
/* Callback actions (shared by model and library runs)                */
/* ------------------------------------------------------------------ */

/*
 * What a callback does when it runs: kind in the low 3 bits, x in bits
 * 3-5 (a callback slot or a source slot), y in bits 6-7 (a source slot).
 */
enum act {
	A_NONE,
	A_SELF_UNREG,   /* unregister itself: false */
	A_UNREG_OTHER,  /* unregister callback x if in use */
	A_CANCEL,       /* cancel source x % NS if alive */
	A_REGISTER,     /* register callback x on source y if free/alive */
	A_TRY_UNREG,    /* try_unregister callback x if in use */
	A_SELF_TRY,     /* try_unregister itself: EINPROGRESS */
	A_DESTROY,      /* destroy source x % NS if alive, maybe its own */
};

#define ACT_KIND(a) ((a) & 7)
#define ACT_X(a) (((a) >> 3) & 7)
#define ACT_Y(a) (((a) >> 6) & 3)

/* Results of actions taken inside callbacks, in order, both sides. */
struct actlog {
	int n;
	int v[MAXLOG];
	int ran[MAXLOG]; /* callback run order */
	int nran;
};

static void
log_push(struct actlog *l, int v)
{
	if (l->n < MAXLOG)
		l->v[l->n++] = v;
}

static void
log_ran(struct actlog *l, int c)
{
	if (l->nran < MAXLOG)
		l->ran[l->nran++] = c;
}

/* ------------------------------------------------------------------ */
/* The model                                                          */
/* ------------------------------------------------------------------ */

/* Library-side state of a callback, as the model sees it. */
enum mlib { L_NEVER, L_REFUSED, L_REG, L_RUNNING, L_DONE, L_REMOVED,
            L_ON_NONE };

struct mcb {
	bool inuse;     /* user view: registered, not yet unregistered */
	int lib;
	int src;        /* slot while L_REG / L_RUNNING */
	int action;
	/* Released from inside its own run: the library keeps a pointer to
	 * the source; see the note at op_unregister(). */
	bool stale;
	/* Being run inline by a register that will return false: callbacks
	 * leave it alone (it was never registered). */
	bool inl;
};

struct msrc {
	bool alive;
	bool canceled;
	int reason;
	int stack[MAXSTACK]; /* >= 0 callback slot, < 0: link of -1 - child */
	int n;
	int children;
	int parents[NS];
	int nparents;
	uint64_t dl;
	bool fd;
};

static struct msrc ms[NS];
static struct mcb mc[NC];
static struct actlog mlog;

static void m_run_cb(int c, int src);
static int m_destroy(int s);

static bool
m_cancel(int s, int reason)
{
	struct msrc *p = &ms[s];
	if (p->canceled)
		return false;
	p->canceled = true;
	p->reason = reason;
	while (p->n > 0) {
		int e = p->stack[--p->n];
		if (e >= 0) {
			m_run_cb(e, s);
		} else {
			int child = -1 - e;
			m_cancel(child, p->reason);
		}
	}
	return true;
}

static void
m_stack_remove(int s, int e)
{
	struct msrc *p = &ms[s];
	for (int i = p->n - 1; i >= 0; i--) {
		if (p->stack[i] == e) {
			memmove(&p->stack[i], &p->stack[i + 1],
			        (size_t)(p->n - i - 1) * sizeof(int));
			p->n--;
			return;
		}
	}
}

/* destroy: EBUSY while callbacks are registered or children live. */
static int
m_destroy(int s)
{
	int regs = 0;
	for (int i = 0; i < ms[s].n; i++)
		if (ms[s].stack[i] >= 0)
			regs++;
	if (regs > 0 || ms[s].children > 0)
		return EBUSY;
	for (int i = 0; i < ms[s].nparents; i++) {
		int p = ms[s].parents[i];
		m_stack_remove(p, -1 - s);
		ms[p].children--;
	}
	ms[s].alive = false;
	/* Destroyed from inside its own run: the callbacks it is running
	 * keep pointing at it (see op_unregister()). */
	for (int c = 0; c < NC; c++)
		if (mc[c].lib == L_RUNNING && mc[c].src == s && !mc[c].inl)
			mc[c].stale = true;
	return 0;
}

/* unregister from the user's side. */
static bool
m_unregister(int c)
{
	struct mcb *b = &mc[c];
	bool r = false;
	switch (b->lib) {
	case L_REG:
		m_stack_remove(b->src, c);
		b->lib = L_REMOVED;
		r = true;
		break;
	case L_ON_NONE:
		b->lib = L_REMOVED;
		r = true;
		break;
	case L_RUNNING:
		/* On this thread: released at once. */
		b->lib = L_DONE;
		b->stale = true;
		break;
	default:
		break;
	}
	b->inuse = false;
	return r;
}

static int
m_try_unregister(int c)
{
	struct mcb *b = &mc[c];
	switch (b->lib) {
	case L_REG:
		m_stack_remove(b->src, c);
		b->lib = L_REMOVED;
		b->inuse = false;
		return 0;
	case L_ON_NONE:
		b->lib = L_REMOVED;
		b->inuse = false;
		return 0;
	case L_RUNNING:
		return EINPROGRESS;
	case L_DONE:
		b->inuse = false;
		return EALREADY;
	default:
		b->inuse = false;
		return ENOENT;
	}
}

/* register (try: the try form); s < 0 is CANCEL_TOKEN_NONE. */
static int
m_register(int c, int s, int action, bool try)
{
	struct mcb *b = &mc[c];
	b->action = action;
	b->stale = false;
	if (s < 0) {
		b->lib = L_ON_NONE;
		b->inuse = true;
		return try ? 0 : 1;
	}
	if (ms[s].canceled) {
		b->lib = L_REFUSED;
		b->inuse = false;
		if (try)
			return ECANCELED;
		b->lib = L_RUNNING;
		b->inuse = true;
		b->inl = true;
		m_run_cb(c, -1);
		b->inl = false;
		/* Refused: the library keeps nothing of it (CB_NONE). */
		b->lib = L_REFUSED;
		b->inuse = false;
		return 0;
	}
	b->lib = L_REG;
	b->src = s;
	b->inuse = true;
	if (ms[s].n >= MAXSTACK)
		api_fail("model stack overflow");
	ms[s].stack[ms[s].n++] = c;
	return try ? 0 : 1;
}

static void
m_run_cb(int c, int src)
{
	struct mcb *b = &mc[c];
	b->lib = L_RUNNING;
	b->src = src;
	log_ran(&mlog, c);
	int a = b->action;
	int x = ACT_X(a), y = ACT_Y(a);
	switch (ACT_KIND(a)) {
	case A_SELF_UNREG:
		if (src >= 0) {
			/* Unregister inside its own run: false, released. */
			b->lib = L_DONE;
			b->stale = true;
		}
		b->inuse = false;
		log_push(&mlog, 0);
		break;
	case A_SELF_TRY:
		log_push(&mlog, src >= 0 ? EINPROGRESS : ENOENT);
		break;
	case A_UNREG_OTHER:
		if (x != c && mc[x].inuse && !mc[x].inl && !mc[x].stale)
			log_push(&mlog, m_unregister(x));
		break;
	case A_TRY_UNREG:
		if (x != c && mc[x].inuse && !mc[x].inl && !mc[x].stale)
			log_push(&mlog, m_try_unregister(x));
		break;
	case A_CANCEL:
		if (ms[x % NS].alive)
			log_push(&mlog, m_cancel(x % NS, 60 + x % NS));
		break;
	case A_REGISTER:
		if (x != c && !mc[x].inuse && ms[y].alive)
			log_push(&mlog, m_register(x, y, A_NONE, false));
		break;
	case A_DESTROY:
		if (ms[x % NS].alive)
			log_push(&mlog, m_destroy(x % NS));
		break;
	default:
		break;
	}
	if (b->lib == L_RUNNING)
		b->lib = L_DONE;
}

/* ------------------------------------------------------------------ */
/* The library side                                                   */
/* ------------------------------------------------------------------ */

static struct cancel_source *rs[NS];
/* Heap records, NULL while the slot has none (see cb_new/cb_free). */
static struct cancel_callback *rc_cb[NC];
static int rc_action[NC];
static bool rc_inuse[NC];
static bool rc_inl[NC];
static bool rc_stale[NC];
static int rc_src[NC];     /* the source registered on */
static int rc_running[NC]; /* callbacks running now, innermost last */
static int rc_nrunning;
static struct actlog rlog;
static int rc_arg[NC];

static cancel_token
rtok(int s)
{
	return s < 0 ? CANCEL_TOKEN_NONE : cancel_source_token(rs[s]);
}

static void r_fn(void *arg);
static void src_free(int s);

static void
cb_new(int c)
{
	rc_cb[c] = lf_alloc(sizeof(*rc_cb[c]), LF_POISON);
}

/* Right after the call that ended the registration returned. */
static void
cb_free(int c)
{
	lf_free(rc_cb[c], sizeof(*rc_cb[c]), LF_POISON, "callback record");
	rc_cb[c] = NULL;
}

static void
r_fn(void *arg)
{
	int c = *(int *)arg;
	log_ran(&rlog, c);
	rc_running[rc_nrunning++] = c;
	int a = rc_action[c];
	int x = ACT_X(a), y = ACT_Y(a);
	switch (ACT_KIND(a)) {
	case A_SELF_UNREG:
		log_push(&rlog, cancel_callback_unregister(rc_cb[c]));
		rc_inuse[c] = false;
		/* Released: freed at once, from inside its own run (not when
		 * a register runs it inline: that call still has it). */
		if (!rc_inl[c])
			cb_free(c);
		break;
	case A_SELF_TRY:
		log_push(&rlog, cancel_callback_try_unregister(rc_cb[c]));
		break;
	case A_UNREG_OTHER:
		if (x != c && rc_inuse[x] && !rc_inl[x] && !rc_stale[x]) {
			log_push(&rlog, cancel_callback_unregister(rc_cb[x]));
			rc_inuse[x] = false;
			cb_free(x);
		}
		break;
	case A_TRY_UNREG:
		if (x != c && rc_inuse[x] && !rc_inl[x] && !rc_stale[x]) {
			int r = cancel_callback_try_unregister(rc_cb[x]);
			if (r != EINPROGRESS) {
				rc_inuse[x] = false;
				cb_free(x);
			}
			log_push(&rlog, r);
		}
		break;
	case A_CANCEL:
		if (rs[x % NS] != NULL)
			log_push(&rlog, cancel_source_cancel_with(rs[x % NS],
			                                          60 + x % NS));
		break;
	case A_REGISTER:
		if (x != c && !rc_inuse[x] && rs[y] != NULL) {
			rc_action[x] = A_NONE;
			rc_inuse[x] = true;
			rc_stale[x] = false;
			rc_src[x] = y;
			rc_inl[x] = true;
			cb_new(x);
			bool r = cancel_callback_register(rc_cb[x], r_fn,
			                                  &rc_arg[x], rtok(y));
			rc_inl[x] = false;
			if (!r) {
				rc_inuse[x] = false;
				cb_free(x);
			}
			log_push(&rlog, r);
		}
		break;
	case A_DESTROY:
		if (rs[x % NS] != NULL) {
			int r = cancel_source_destroy(rs[x % NS]);
			if (r == 0) {
				/* The cancel must not touch it again. */
				src_free(x % NS);
				for (int i = 0; i < rc_nrunning; i++) {
					int k = rc_running[i];
					if (rc_src[k] == x % NS && !rc_inl[k])
						rc_stale[k] = true;
				}
			}
			log_push(&rlog, r);
		}
		break;
	default:
		break;
	}
	rc_nrunning--;
}

/* ------------------------------------------------------------------ */
/* Comparing                                                          */
/* ------------------------------------------------------------------ */

static void
compare_logs(void)
{
	EXPECT_EQ(rlog.nran, mlog.nran, "callbacks run");
	for (int i = 0; i < rlog.nran; i++)
		if (rlog.ran[i] != mlog.ran[i])
			api_fail("run order: #%d is callback %d, model %d", i,
			         rlog.ran[i], mlog.ran[i]);
	EXPECT_EQ(rlog.n, mlog.n, "actions inside callbacks");
	for (int i = 0; i < rlog.n; i++)
		if (rlog.v[i] != mlog.v[i])
			api_fail("action #%d result %d, model %d", i, rlog.v[i],
			         mlog.v[i]);
	for (int c = 0; c < NC; c++)
		EXPECT_EQ(rc_inuse[c], mc[c].inuse, "callback in use");
	for (int s = 0; s < NS; s++) {
		EXPECT_EQ(rs[s] != NULL, ms[s].alive, "source alive");
		if (rs[s] == NULL)
			continue;
		cancel_token t = cancel_source_token(rs[s]);
		EXPECT_EQ(cancel_token_is_canceled(t), ms[s].canceled,
		          "canceled");
		EXPECT_EQ(cancel_token_reason(t),
		          ms[s].canceled ? ms[s].reason : 0, "reason");
	}
}

/* ------------------------------------------------------------------ */
/* Operations                                                         */
/* ------------------------------------------------------------------ */

static void
src_alloc(int s)
{
	rs[s] = lf_alloc(sizeof(*rs[s]), LF_PAGE);
	/* Garbage: init must write every field that needs a value. */
	memset(rs[s], 0xa5, sizeof(*rs[s]));
}

/* Right after its destroy returned 0. */
static void
src_free(int s)
{
	lf_free(rs[s], sizeof(*rs[s]), LF_PAGE, "source");
	rs[s] = NULL;
}

static void
m_src_reset(int s)
{
	ms[s] = (struct msrc){.alive = true, .dl = NEVER};
	/* Callbacks released inside a run keep pointing at the old one. */
}

static void
op_init_plain(int s)
{
	if (ms[s].alive)
		return;
	src_alloc(s);
	cancel_source_init(rs[s]);
	m_src_reset(s);
}

/* @mask: which other slots are parents (bits 0-4), bit 5: add a NONE
 * parent, bit 6: fail the next allocation. */
static void
op_init_linked(int s, int mask, int order)
{
	if (ms[s].alive)
		return;
	cancel_token toks[NS + 1];
	int idx[NS + 1];
	size_t n = 0;
	for (int i = 0; i < NS; i++) {
		int p = (i + order) % NS;
		if (p != s && (mask & (1 << p)) && ms[p].alive) {
			toks[n] = cancel_source_token(rs[p]);
			idx[n++] = p;
		}
	}
	if (mask & 0x20) {
		toks[n] = CANCEL_TOKEN_NONE;
		idx[n++] = -1;
	}
	bool fault = (mask & 0x40) != 0;

	/* Model. */
	m_src_reset(s);
	int first_canceled = -1, k = 0;
	for (size_t i = 0; i < n; i++) {
		if (idx[i] < 0)
			continue;
		k++;
		if (first_canceled < 0 && ms[idx[i]].canceled)
			first_canceled = idx[i];
	}
	int expect = 0;
	if (first_canceled >= 0) {
		ms[s].canceled = true;
		ms[s].reason = ms[first_canceled].reason;
	} else if (k > 1 && fault) {
		expect = ENOMEM;
	} else {
		for (size_t i = 0; i < n; i++) {
			int p = idx[i];
			if (p < 0)
				continue;
			ms[p].stack[ms[p].n++] = -1 - s;
			ms[p].children++;
			ms[s].parents[ms[s].nparents++] = p;
		}
	}

	src_alloc(s);
	if (fault)
		cancel__test_fail_alloc(1);
	int r = cancel_source_init_linked(rs[s], toks, n);
	cancel__test_fail_alloc(0);
	EXPECT_EQ(r, expect, "init_linked");
}

static void
op_destroy(int s)
{
	if (!ms[s].alive)
		return;
	int expect = m_destroy(s);
	int r = cancel_source_destroy(rs[s]);
	EXPECT_EQ(r, expect, "destroy");
	if (r == 0)
		src_free(s);
}

static void
op_cancel(int s, int reason, bool with)
{
	if (!ms[s].alive)
		return;
	int mr = with ? (reason <= 0 ? ECANCELED : reason) : ECANCELED;
	bool m = m_cancel(s, mr);
	bool r = with ? cancel_source_cancel_with(rs[s], reason)
	              : cancel_source_cancel(rs[s]);
	EXPECT_EQ(r, m, "cancel");
}

static void
op_register(int c, int s, int action, bool try)
{
	if (mc[c].inuse)
		return;
	if (s >= 0 && !ms[s].alive)
		return;
	int m = m_register(c, s, action, try);
	rc_action[c] = action;
	rc_inuse[c] = true;
	rc_stale[c] = false;
	rc_src[c] = s;
	int r;
	cb_new(c);
	if (try) {
		r = cancel_callback_try_register(rc_cb[c], r_fn, &rc_arg[c],
		                                 rtok(s));
		if (r != 0) {
			rc_inuse[c] = false;
			cb_free(c);
		}
	} else {
		rc_inl[c] = true;
		r = cancel_callback_register(rc_cb[c], r_fn, &rc_arg[c],
		                             rtok(s));
		rc_inl[c] = false;
		if (!r) {
			rc_inuse[c] = false;
			cb_free(c);
		}
	}
	EXPECT_EQ(r, m, try ? "try_register" : "register");
}

/*
 * Any callback may be unregistered, stale ones included: callbacks that
 * unregistered themselves from inside their run, or whose source was
 * destroyed while they ran, must forget the source like any completed
 * callback, so unregistering them again after the source is freed is
 * allowed (once a use-after-free, fixed; ASan checks it here).
 */
static void
op_unregister(int c, bool try)
{
	if (!mc[c].inuse && mc[c].lib == L_NEVER && !try)
		return;
	if (rc_cb[c] == NULL) {
		/* Its registration ended and it was freed: only a fresh,
		 * all-zero record can be asked about (never registered). */
		if (try) {
			cb_new(c);
			EXPECT_EQ(cancel_callback_try_unregister(rc_cb[c]),
			          ENOENT, "try_unregister (zero record)");
			cb_free(c);
		}
		return;
	}
	if (try) {
		int m = m_try_unregister(c);
		int r = cancel_callback_try_unregister(rc_cb[c]);
		if (r != EINPROGRESS) {
			rc_inuse[c] = false;
			cb_free(c);
		}
		EXPECT_EQ(r, m, "try_unregister");
	} else {
		bool m = m_unregister(c);
		bool r = cancel_callback_unregister(rc_cb[c]);
		rc_inuse[c] = false;
		cb_free(c);
		EXPECT_EQ(r, m, "unregister");
	}
}

/* A firing is a round trip through the library thread (tens of
 * microseconds, more on a loaded machine): one per input keeps the
 * fuzzer fast. */
#define MAX_FIRINGS 1
static int firings;

/*
 * Wait until the library thread has finished firing @s (which a callback
 * may have destroyed and freed meanwhile, so @s itself is not watched): a
 * private marker source with a later deadline fires after it, as the
 * thread fires due sources one at a time, earliest first.
 */
static void
wait_fired(void)
{
	struct cancel_source *marker = lf_alloc(sizeof(*marker), LF_PAGE);
	cancel_source_init(marker);
	if (cancel_source_cancel_after(marker, 1000) != 0)
		api_fail("marker deadline");
	if (cancel_wait(NULL, cancel_source_token(marker)) != ECANCELED)
		api_fail("marker wait");
	if (cancel_source_destroy(marker) != 0)
		api_fail("marker destroy");
	lf_free(marker, sizeof(*marker), LF_PAGE, "marker source");
}

static void
op_deadline_zero(int s, bool at)
{
	if (!ms[s].alive || firings >= MAX_FIRINGS)
		return;
	firings++;
	bool was = ms[s].canceled;
	if (!was) {
		m_cancel(s, ETIMEDOUT);
		if (ms[s].alive)
			ms[s].dl = NEVER;
	}
	int r;
	if (at) {
		struct timespec past = {0, 1};
		r = cancel_source_cancel_at(rs[s], &past);
	} else {
		r = cancel_source_cancel_after(rs[s], 0);
	}
	EXPECT_EQ(r, 0, "zero deadline");
	if (!was)
		wait_fired();
}

static uint64_t far_base;

static void
op_deadline_far(int s, int k)
{
	if (!ms[s].alive)
		return;
	int r;
	if (k >= 200) {
		if (!ms[s].canceled)
			ms[s].dl = NEVER;
		r = (k & 1) ? cancel_source_cancel_at(rs[s], NULL)
		            : cancel_source_cancel_after(rs[s], CANCEL_NEVER);
	} else {
		uint64_t d = far_base + (uint64_t)k * 1000000000ull;
		if (!ms[s].canceled)
			ms[s].dl = d;
		struct timespec ts = cancel__ns_to_ts(d);
		r = cancel_source_cancel_at(rs[s], &ts);
	}
	EXPECT_EQ(r, 0, "cancel_at");
}

static uint64_t
m_earliest(int s, int depth)
{
	uint64_t best = ms[s].dl;
	if (depth > NS)
		return best;
	for (int i = 0; i < ms[s].nparents; i++) {
		uint64_t d = m_earliest(ms[s].parents[i], depth + 1);
		if (d < best)
			best = d;
	}
	return best;
}

static void
op_query(int s)
{
	if (s >= 0 && !ms[s].alive)
		return;
	cancel_token t = rtok(s);
	bool canceled = s >= 0 && ms[s].canceled;
	EXPECT_EQ(cancel_token_can_be_canceled(t), s >= 0, "can_be_canceled");
	EXPECT_EQ(cancel_token_check(t), canceled ? ECANCELED : 0, "check");
	struct timespec past = {0, 0};
	EXPECT_EQ(cancel_wait(&past, t), canceled ? ECANCELED : ETIMEDOUT,
	          "wait (past deadline)");
	EXPECT_EQ(cancel_sleep(0, t), canceled ? ECANCELED : 0, "sleep(0)");
	if (s < 0) {
		EXPECT_EQ(cancel_wait(NULL, t), EINVAL, "wait(NONE, NULL)");
		return;
	}
	struct timespec ts;
	bool has = cancel_token_deadline(t, &ts);
	uint64_t m = m_earliest(s, 0);
	EXPECT_EQ(has, m != NEVER, "deadline armed");
	if (has && cancel__ts_to_ns(&ts) != m)
		api_fail("deadline %llu, model %llu",
		         (unsigned long long)cancel__ts_to_ns(&ts),
		         (unsigned long long)m);
}

static void
op_fd(int s, bool via_poll)
{
	if (!ms[s].alive)
		return;
	cancel_token t = rtok(s);
	bool canceled = ms[s].canceled;
	if (via_poll) {
		struct timespec past = {0, 0};
		int r = cancel_poll(NULL, 0, &past, t);
		EXPECT_EQ(r, canceled ? ECANCELED : ETIMEDOUT, "poll(0 fds)");
		if (!canceled)
			ms[s].fd = true;
		return;
	}
	int fd = -1;
	EXPECT_EQ(cancel_token_fd(t, &fd), 0, "token_fd");
	ms[s].fd = true;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int n = poll(&p, 1, 0);
	EXPECT_EQ(n == 1 && (p.revents & POLLIN), canceled, "fd readable");
}

/* Run one operation; returns the bytes it used (0: input exhausted). */
static size_t
run_op(const uint8_t *d, size_t n)
{
	if (n < 2)
		return 0;
	uint8_t op = d[0];
	uint8_t a = d[1];
	uint8_t b = n > 2 ? d[2] : 0;
	uint8_t c = n > 3 ? d[3] : 0;
	int s = a % NS;
	switch (op % 14) {
	case 0:
		op_init_plain(s);
		return 2;
	case 1:
		op_init_linked(s, b, c % NS);
		return 4;
	case 2:
		op_destroy(s);
		return 2;
	case 3:
		op_cancel(s, 0, false);
		return 2;
	case 4:
		op_cancel(s, (int8_t)b, true);
		return 3;
	case 5:
	case 6:
		/* a: callback slot (low 3 bits) and source (NONE if
		 * a >= 224); b: action. */
		op_register(a % NC, a >= 224 ? -1 : (a >> 3) % NS, b,
		            op % 14 == 6);
		return 3;
	case 7:
		op_unregister(a % NC, false);
		return 2;
	case 8:
		op_unregister(a % NC, true);
		return 2;
	case 9:
		op_deadline_zero(s, (a >> 3) & 1);
		return 2;
	case 10:
		op_deadline_far(s, b);
		return 3;
	case 11:
		op_query(a >= 224 ? -1 : s);
		return 2;
	case 12:
		op_fd(s, false);
		return 2;
	default:
		op_fd(s, true);
		return 2;
	}
}

/* Unregister everything and destroy every source, children first. */
static void
teardown(void)
{
	for (int c = 0; c < NC; c++)
		if (mc[c].inuse)
			op_unregister(c, false);
	for (int c = 0; c < NC; c++) {
		if (mc[c].inuse || rc_inuse[c])
			api_fail("callback %d in use after unregister", c);
		if (rc_cb[c] != NULL)
			cb_free(c);
	}
	compare_logs();
	for (int round = 0; round < NS; round++)
		for (int s = 0; s < NS; s++)
			if (ms[s].alive && ms[s].children == 0)
				op_destroy(s);
	for (int s = 0; s < NS; s++)
		if (ms[s].alive)
			api_fail("slot %d not destroyable at the end", s);
}

int FUZZ_API_ENTRY(const uint8_t *data, size_t size);

int
FUZZ_API_ENTRY(const uint8_t *data, size_t size)
{
	long live0 = cancel__test_live_objects();
	memset(ms, 0, sizeof(ms));
	memset(mc, 0, sizeof(mc));
	for (int c = 0; c < NC; c++)
		rc_cb[c] = NULL;
	memset(rc_inuse, 0, sizeof(rc_inuse));
	memset(rc_inl, 0, sizeof(rc_inl));
	memset(rc_stale, 0, sizeof(rc_stale));
	rc_nrunning = 0;
	memset(&mlog, 0, sizeof(mlog));
	memset(&rlog, 0, sizeof(rlog));
	for (int c = 0; c < NC; c++)
		rc_arg[c] = c;
	far_base = cancel__now_ns() + 3600ull * 1000000000ull;
	firings = 0;
	/* Two plain sources to start with. */
	op_init_plain(0);
	op_init_plain(1);
	api_opno = 0;

	size_t pos = 0;
	while (pos < size && api_opno < 256) {
		size_t used = run_op(data + pos, size - pos);
		if (used == 0)
			break;
		pos += used;
		api_opno++;
		compare_logs();
	}
	teardown();
	if (cancel__test_live_objects() != live0)
		api_fail("live objects %ld, expected %ld",
		         cancel__test_live_objects(), live0);
	if (lf_bad() != 0)
		api_fail("%ld freed blocks written after their free", lf_bad());
	return 0;
}
