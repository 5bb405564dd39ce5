/*
 * Groups: members on threads, the first failure cancels the siblings,
 * wait joins every thread.
 *
 * State (all under the group's mutex mu_):
 *   active_   members accepted by go and not yet returned (the limit
 *             counts these; wait waits for 0)
 *   threads_  member threads created and not yet joined
 *   idle_     threads whose member returned, parked for reuse: a list of
 *             struct worker, each living on its own thread's stack
 *   users_    go and wait calls inside (destroy returns EBUSY)
 *   err_      the first failure
 *
 * Threads are reused. Measured with bench/bench_group.c (go + run + wait
 * of 1,000 trivial members, medians of 41, this 2-core VM, 9 runs):
 * reusing parked threads 4.0-8.3 ms, raw pthread_create + pthread_join of
 * 1,000 threads 37.8-47.9 ms, a thread per member 73.7-120.5 ms (each go
 * waits for its new thread to take the task; see struct start). A
 * hand-off is one futex wake; a creation maps a stack and clones.
 *
 * A thread parks on its own futex word (struct worker.go) after its
 * member returned; go pops it from idle_ under mu_, stores the task in it
 * and releases the word. Only wait retires parked threads, once no member is
 * active: it takes idle_, tells each thread to exit and joins it.
 *
 * Lifetime. A member thread's accesses to the group all happen before it
 * exits, and wait joins it before returning, so once wait returned (0, a
 * failure or ECANCELED) no member thread exists. A thread records its
 * result and parks itself in one critical section of mu_; a go that hands
 * it a task and a wait that retires it read its struct worker (on its
 * stack) only while it is parked, i.e. before they release its word.
 *
 * A new thread copies its first task from go's stack frame, then releases
 * struct start's taken word, which go parks on: go returns only after
 * that, so no allocation is needed.
 */
#include "internal.h"

#include "atomic.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>

#define G_INIT 0x1u /* initialized, not yet destroyed */

/* Values of struct worker.go_ (the parked thread's futex word). */
#define GO_PARKED 0u
#define GO_RUN 1u
#define GO_EXIT 2u

/* One member thread; lives on that thread's stack until it is joined. */
struct worker {
	struct worker *next;   /* in idle_, or in a wait's retire list */
	pthread_t self;
	cancel_task_fn fn;     /* the task go handed over (before GO_RUN) */
	void *arg;
	uint32_t go;           /* GO_PARKED, GO_RUN or GO_EXIT */
};

/* A new thread's first task, in go's frame until taken is set. */
struct start {
	struct cancel_group *g;
	cancel_task_fn fn;
	void *arg;
	uint32_t taken;
};

/* The group whose member this thread runs (go/wait from inside). */
static _Thread_local struct cancel_group *current_group;

/* Test hooks (internal.h). */
static long fail_create_at;  /* the k-th thread creation fails */
static int no_reuse;         /* 1: a thread runs one member, then exits */

void
cancel__group_test_fail_create(long k)
{
	st_relaxed(&fail_create_at, k);
}

void
cancel__group_test_no_reuse(bool on)
{
	st_relaxed(&no_reuse, on ? 1 : 0);
}

static bool
create_fails(void)
{
	long k = ld_relaxed(&fail_create_at);
	/* A test hook: nothing is published through it. */
	while (k > 0)
		if (cas_acq_rel(&fail_create_at, &k, k - 1))
			return k == 1;
	return false;
}

static cancel_token
group_token(struct cancel_group *g)
{
	return cancel_source_token(&g->src_);
}

/*
 * Record @rc, the result of a member that just returned. A failure cancels
 * the group first (outside mu_: the cancel runs callbacks, among them the
 * wake-ups of go calls waiting for a slot on mu_). Called without mu_.
 * Returns whether this member failed and whether it won the cancel.
 */
static int
classify(struct cancel_group *g, int rc, bool *won)
{
	*won = false;
	if (rc == 0)
		return 0;
	if (rc == ECANCELED && cancel_token_is_canceled(group_token(g)))
		return 0; /* stopped by the group's cancel: not a failure */
	*won = cancel__cancel_cause(&g->src_, rc, "group member failed");
	return rc;
}

/* Under mu_: keep the first failure (see cancel.h). */
static void
record_locked(struct cancel_group *g, int err, bool won)
{
	if (err == 0)
		return;
	/* At most one member wins the cancel; it overrides a member that
	 * failed after an outside cancel and got here first. flags_ is
	 * not written: go reads it without the mutex. */
	if (won || g->err_ == 0)
		g->err_ = err;
}

static void *
worker_main(void *p)
{
	struct start *st = p;
	struct cancel_group *g = st->g;
	struct worker w = {.self = pthread_self(), .fn = st->fn,
	                   .arg = st->arg};
	/* Release pairs with go's acquire load of taken: after it, go's
	 * frame (st) is never read again. The wake never dereferences. */
	st_release(&st->taken, 1u);
	cancel__unpark_all(&st->taken);
	current_group = g;
	cancel_token tok = group_token(g);

	for (;;) {
		bool won;
		int err = classify(g, w.fn(w.arg, tok), &won);

		pthread_mutex_lock(&g->mu_);
		record_locked(g, err, won);
		/* Parked from here on: go or wait may read w once they took
		 * it from idle_ under mu_. */
		st_relaxed(&w.go, GO_PARKED);
		w.next = g->idle_;
		g->idle_ = &w;
		g->active_--;
		bool last = g->active_ == 0;
		bool slot = g->limit_ != 0;
		pthread_mutex_unlock(&g->mu_);
		/* Still before our exit, which wait joins: g is alive. */
		if (slot)
			pthread_cond_signal(&g->slot_cv_);
		if (last)
			pthread_cond_broadcast(&g->done_cv_);

		uint32_t v;
		/* Acquire pairs with the release store of go (hand-off or
		 * retire): fn/arg written before it are visible. */
		while ((v = ld_acquire(&w.go)) == GO_PARKED)
			cancel__park(&w.go, GO_PARKED, CANCEL_NEVER);
		if (v == GO_EXIT)
			return NULL; /* wait joins us; g is never touched */
	}
}

/* Create a thread for a first task; every signal blocked in it. */
static int
spawn(struct cancel_group *g, cancel_task_fn fn, void *arg)
{
	if (create_fails())
		return EAGAIN;
	struct start st = {.g = g, .fn = fn, .arg = arg};
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	int rc = pthread_create(&t, NULL, worker_main, &st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return EAGAIN;
	/* Acquire pairs with worker_main's release of taken. */
	while (ld_acquire(&st.taken) == 0)
		cancel__park(&st.taken, 0u, CANCEL_NEVER);
	return 0;
}

/* Hand a task to the parked @w (taken from idle_ under mu_). */
static void
hand_over(struct worker *w, cancel_task_fn fn, void *arg)
{
	w->fn = fn;
	w->arg = arg;
	/* Release pairs with worker_main's acquire load of go. After it,
	 * w may run, park again, be retired and joined: only the wake
	 * follows, and it never dereferences. */
	st_release(&w->go, GO_RUN);
	cancel__unpark_all(&w->go);
}

static int
go_common(struct cancel_group *g, cancel_task_fn fn, void *arg, bool block)
{
	if (g == NULL || fn == NULL || !(g->flags_ & G_INIT))
		return EINVAL;
	CANCEL_ERRNO_SAVE();
	int cstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cstate);
	cancel_token tok = group_token(g);
	bool member = current_group == g;
	int rc = 0;

	pthread_mutex_lock(&g->mu_);
	g->users_++;
	for (;;) {
		int reason = cancel_token_reason(tok);
		if (reason != 0) {
			rc = reason; /* the sibling's error, not ECANCELED */
			goto out;
		}
		if (g->limit_ == 0 || g->active_ < g->limit_)
			break;
		if (!block || member) {
			rc = EAGAIN;
			goto out;
		}
		/* Woken by a member returning or by the group's cancel. */
		int r = cancel_cond_wait(&g->slot_cv_, &g->mu_, NULL, tok);
		if (r != 0 && r != ECANCELED) {
			rc = r; /* EAGAIN: no library thread */
			goto out;
		}
	}
	g->active_++;
	struct worker *w = g->idle_;
	if (w != NULL && !ld_relaxed(&no_reuse)) {
		g->idle_ = w->next;
		g->users_--;
		pthread_mutex_unlock(&g->mu_);
		hand_over(w, fn, arg);
		goto done;
	}
	g->threads_++;
	pthread_mutex_unlock(&g->mu_);
	rc = spawn(g, fn, arg);
	pthread_mutex_lock(&g->mu_);
	if (rc != 0) {
		/* Nothing started: undo, and let a waiter see the slot. */
		g->active_--;
		g->threads_--;
		pthread_cond_signal(&g->slot_cv_);
		pthread_cond_broadcast(&g->done_cv_);
	}
out:
	g->users_--;
	pthread_mutex_unlock(&g->mu_);
done:
	pthread_setcancelstate(cstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

int
cancel_group_go(struct cancel_group *g, cancel_task_fn fn, void *arg)
{
	return go_common(g, fn, arg, true);
}

int
cancel_group_try_go(struct cancel_group *g, cancel_task_fn fn, void *arg)
{
	return go_common(g, fn, arg, false);
}

/*
 * With mu_ held and no member active: retire every parked thread and join
 * it (mu_ dropped meanwhile). Returns how many were joined.
 */
static unsigned
retire_idle_locked(struct cancel_group *g)
{
	struct worker *list = g->idle_;
	g->idle_ = NULL;
	pthread_mutex_unlock(&g->mu_);
	unsigned n = 0;
	while (list != NULL) {
		/* Read w before releasing it: after GO_EXIT its thread
		 * returns and w's storage ends with it. */
		struct worker *next = list->next;
		pthread_t t = list->self;
		/* Release pairs with worker_main's acquire load of go. */
		st_release(&list->go, GO_EXIT);
		cancel__unpark_all(&list->go);
		pthread_join(t, NULL);
		n++;
		list = next;
	}
	pthread_mutex_lock(&g->mu_);
	return n;
}

int
cancel_group_wait(struct cancel_group *g, const struct timespec *deadline)
{
	uint64_t dl;
	if (g == NULL || cancel__deadline_ns(deadline, &dl) != 0)
		return EINVAL;
	if (!(g->flags_ & G_INIT))
		return 0;
	if (current_group == g)
		return EDEADLK;
	CANCEL_ERRNO_SAVE();
	int cstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cstate);
	int rc;

	pthread_mutex_lock(&g->mu_);
	g->users_++;
	for (;;) {
		if (g->active_ == 0) {
			if (g->idle_ != NULL) {
				/* mu_ is dropped inside: read threads_
				 * only after it is held again. */
				unsigned n = retire_idle_locked(g);
				g->threads_ -= n;
				pthread_cond_broadcast(&g->done_cv_);
				continue;
			}
			if (g->threads_ == 0)
				break;
			/* Another wait is joining (bounded): no deadline. */
			cancel_cond_wait(&g->done_cv_, &g->mu_, NULL,
			                 CANCEL_TOKEN_NONE);
			continue;
		}
		/* Never ended by the group's cancel: no token. */
		int r = cancel_cond_wait(&g->done_cv_, &g->mu_, deadline,
		                         CANCEL_TOKEN_NONE);
		if (r == ETIMEDOUT && g->active_ != 0) {
			rc = ETIMEDOUT;
			goto out;
		}
		if (r == EAGAIN) {
			rc = EAGAIN;
			goto out;
		}
	}
	if (g->err_ != 0)
		rc = g->err_;
	else if (cancel_token_is_canceled(group_token(g)))
		rc = ECANCELED;
	else
		rc = 0;
out:
	g->users_--;
	pthread_mutex_unlock(&g->mu_);
	pthread_setcancelstate(cstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

int
cancel_group_init(struct cancel_group *g, unsigned limit, cancel_token parent)
{
	if (g == NULL)
		return EINVAL;
	CANCEL_ERRNO_SAVE();
	int rc = pthread_mutex_init(&g->mu_, NULL);
	if (rc != 0)
		goto out;
	rc = pthread_cond_init(&g->slot_cv_, NULL);
	if (rc != 0)
		goto out_mu;
	rc = pthread_cond_init(&g->done_cv_, NULL);
	if (rc != 0)
		goto out_slot;
	/* One parent: allocates nothing, cannot fail. */
	cancel_source_init_linked(&g->src_, &parent, 1);
	g->idle_ = NULL;
	g->limit_ = limit;
	g->active_ = 0;
	g->threads_ = 0;
	g->users_ = 0;
	g->err_ = 0;
	g->flags_ = G_INIT;
	goto out;
out_slot:
	pthread_cond_destroy(&g->slot_cv_);
out_mu:
	pthread_mutex_destroy(&g->mu_);
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}

cancel_token
cancel_group_token(struct cancel_group *g)
{
	cancel_token tok;
	tok.src_ = g != NULL ? &g->src_ : NULL;
	return tok;
}

int
cancel_group_destroy(struct cancel_group *g)
{
	if (g == NULL)
		return EINVAL;
	if (!(g->flags_ & G_INIT))
		return 0;
	if (current_group == g)
		return EBUSY; /* we are a member: it runs */
	CANCEL_ERRNO_SAVE();
	pthread_mutex_lock(&g->mu_);
	bool busy = g->active_ != 0 || g->threads_ != 0 || g->users_ != 0;
	pthread_mutex_unlock(&g->mu_);
	int rc = EBUSY;
	if (busy)
		goto out;
	rc = cancel_source_destroy(&g->src_);
	if (rc != 0)
		goto out;
	pthread_cond_destroy(&g->done_cv_);
	pthread_cond_destroy(&g->slot_cv_);
	pthread_mutex_destroy(&g->mu_);
	g->flags_ = 0;
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}
