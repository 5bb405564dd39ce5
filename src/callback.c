/*
 * The callback list: register, unregister and their non-waiting forms.
 *
 * The list is intrusive and doubly linked (no allocation), pushed at the
 * head so the canceller pops last-registered first. Every list change, every
 * state change of a registered callback and current_ are made under the
 * source's list lock; cb->src_ and cb->state_ are also read outside it with
 * relaxed loads (only to find the lock, or for ON_NONE registrations that no
 * other thread can touch).
 *
 * Lifetime hand-offs: once register returned false, or unregister returned,
 * or try_unregister returned anything but EINPROGRESS, the caller owns @cb
 * again and may free it. A callback that unregisters itself from inside
 * releases @cb to itself at that moment: the run frame remembers, and the
 * canceller never touches @cb again.
 */
#include "internal.h"

#include "atomic.h"
#include "core.h"

#include <errno.h>
#include <pthread.h>

int
cancel__register(struct cancel_callback *cb, cancel_fn fn, void *arg,
                 struct cancel_source *src, uint32_t flags)
{
	cb->next_ = NULL;
	cb->prev_ = NULL;
	if (src == NULL) {
		cb->fn_ = fn;
		cb->arg_ = arg;
		st_relaxed(&cb->spare_, 0u);
		st_relaxed(&cb->src_, NULL);
		st_relaxed(&cb->state_, CB_ON_NONE | flags);
		return 0;
	}
	if (!core_lock_unless_canceled(src)) {
		cb->fn_ = fn;
		cb->arg_ = arg;
		st_relaxed(&cb->spare_, 0u);
		st_relaxed(&cb->src_, NULL);
		st_relaxed(&cb->state_, CB_NONE);
		return ECANCELED;
	}
	core_push_locked(src, cb, fn, arg, flags);
	/* The unlock's release publishes cb's fields to the canceller, whose
	 * lock acquire pairs with it. */
	core_unlock(src);
	return 0;
}

int
cancel_callback_try_register(struct cancel_callback *cb, cancel_fn fn,
                             void *arg, cancel_token tok)
{
	if (cb == NULL || fn == NULL)
		return EINVAL;
	return cancel__register(cb, fn, arg, tok.src_, 0);
}

/* Everything but the uncontended registration on a live source. */
static __attribute__((noinline)) bool
register_slow(struct cancel_callback *cb, cancel_fn fn, void *arg,
              struct cancel_source *src)
{
	if (cb == NULL || fn == NULL)
		return false;
	if (cancel__register(cb, fn, arg, src, 0) == 0)
		return true;
	CANCEL_ERRNO_SAVE();
	fn(arg);
	CANCEL_ERRNO_RESTORE();
	return false;
}

/*
 * The fast path is kept free of calls (every other case tail-calls
 * register_slow, which starts over: CANCELED is one-way), so the compiler
 * saves no registers: 24 instructions, one exchange. With unregister's
 * fast path this took register+unregister from 0.9-1.07x of a
 * std::stop_callback to 0.5-0.6x on this VM's slow phases (bench/README).
 */
CANCEL_HOT_FN bool
cancel_callback_register(struct cancel_callback *cb, cancel_fn fn, void *arg,
                         cancel_token tok)
{
	struct cancel_source *src = tok.src_;
	if (__builtin_expect(cb == NULL, 0) || __builtin_expect(fn == NULL, 0))
		return false;
	if (__builtin_expect(src != NULL, 1) &&
	    core_register_fast(src, cb, fn, arg, 0))
		return true;
	return register_slow(cb, fn, arg, src);
}

/*
 * The wait-for graph of unregisters parked on a callback running on another
 * thread. It is consulted only on that slow path, to refuse a wait that
 * would close a cycle (two callbacks unregistering each other while their
 * sources cancel on two threads): following "thread T waits for source W,
 * whose callbacks run on thread owner_(W)" from the thread we would wait
 * for, we must never come back to ourselves.
 */
struct wait_rec {
	struct wait_rec *next;
	const void *thread;
	struct cancel_source *src;
};

static pthread_mutex_t graph_mu = PTHREAD_MUTEX_INITIALIZER;
static struct wait_rec *graph;

/*
 * Callbacks that unregistered themselves and are still running. Such a
 * callback has forgotten its source (the caller may destroy and free it as
 * soon as the callback returns), so another thread that unregisters it
 * meanwhile cannot wait through the source: it waits here instead, until
 * the canceller, which knows the frame but must not touch the callback,
 * takes the frame off the list. All under graph_mu; graph_cv announces
 * removals. released_count lets the common case skip the mutex.
 */
static pthread_cond_t graph_cv = PTHREAD_COND_INITIALIZER;
static struct cancel__frame *released;
static unsigned released_count;
/* Stamps tell a released callback from a new one at the same address
 * (freed by its fn and registered again): the pair must match. */
static uint32_t released_stamp;

/*
 * fork(): no other thread may hold graph_mu at the fork (the child would
 * deadlock on its first self-unregister). In the child only the forking
 * thread exists: its own released frames stay (it may be inside a callback
 * that released itself, and run_list takes the frame off when it returns);
 * other threads' frames and parked unregisters are gone.
 */
static void
graph_atfork_prepare(void)
{
	pthread_mutex_lock(&graph_mu);
}

static void
graph_atfork_parent(void)
{
	pthread_mutex_unlock(&graph_mu);
}

static void
graph_atfork_child(void)
{
	graph = NULL;
	struct cancel__frame **pp = &released;
	unsigned n = 0;
	while (*pp != NULL) {
		if (cancel__frame_is_mine(*pp)) {
			n++;
			pp = &(*pp)->rel_next;
		} else {
			*pp = (*pp)->rel_next;
		}
	}
	st_relaxed(&released_count, n);
	pthread_cond_init(&graph_cv, NULL);
	pthread_mutex_unlock(&graph_mu);
}

__attribute__((constructor)) static void
graph_register_atfork(void)
{
	pthread_atfork(graph_atfork_prepare, graph_atfork_parent,
	               graph_atfork_child);
}

/* Under graph_mu: the frame whose released callback is @cb, or NULL. */
static struct cancel__frame *
released_find(const struct cancel_callback *cb)
{
	uint32_t stamp = ld_relaxed(&cb->spare_);
	for (struct cancel__frame *f = released; f != NULL; f = f->rel_next)
		if (f->released_cb == cb && f->rel_stamp == stamp)
			return f;
	return NULL;
}

void
cancel__released_add(struct cancel__frame *f, struct cancel_callback *cb)
{
	pthread_mutex_lock(&graph_mu);
	if (++released_stamp == 0)
		released_stamp = 1;
	f->rel_stamp = released_stamp;
	st_relaxed(&cb->spare_, released_stamp);
	f->released_cb = cb;
	f->rel_next = released;
	released = f;
	fetch_add_relaxed(&released_count, 1u);
	pthread_mutex_unlock(&graph_mu);
}

void
cancel__released_done(struct cancel__frame *f)
{
	pthread_mutex_lock(&graph_mu);
	struct cancel__frame **pp = &released;
	while (*pp != f)
		pp = &(*pp)->rel_next;
	*pp = f->rel_next;
	f->released_cb = NULL;
	fetch_add_relaxed(&released_count, (unsigned)-1);
	pthread_cond_broadcast(&graph_cv);
	pthread_mutex_unlock(&graph_mu);
}

/*
 * For a completed callback with no source: is it a released one still
 * running? If it runs on another thread and @wait, wait for its return.
 * Returns true if it is running now (and we did not wait for it).
 */
static bool
released_running(const struct cancel_callback *cb, bool wait)
{
	/* Acquire pairs with the count's increment, which happens before
	 * the release store that cleared cb->src_ (read with acquire). */
	if (ld_acquire(&released_count) == 0)
		return false;
	bool running = false;
	int cs;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
	pthread_mutex_lock(&graph_mu);
	struct cancel__frame *f;
	while ((f = released_find(cb)) != NULL) {
		if (!wait || cancel__frame_is_mine(f)) {
			running = true;
			break;
		}
		pthread_cond_wait(&graph_cv, &graph_mu);
	}
	pthread_mutex_unlock(&graph_mu);
	pthread_setcancelstate(cs, NULL);
	return running;
}

/* Under graph_mu. Each recorded source is alive: its waiter is parked on
 * it, which the thread rules make a use of that source. */
static bool
closes_cycle(struct cancel_source *src)
{
	const void *me = &cancel__tls;
	const void *t = ld_relaxed(&src->owner_);
	for (unsigned hops = 0; t != NULL && hops < 4096; hops++) {
		if (t == me)
			return true;
		struct wait_rec *r = graph;
		while (r != NULL && r->thread != t)
			r = r->next;
		if (r == NULL)
			return false;
		t = ld_relaxed(&r->src->owner_);
	}
	return false;
}

static void
graph_remove(struct wait_rec *rec)
{
	pthread_mutex_lock(&graph_mu);
	struct wait_rec **pp = &graph;
	while (*pp != rec)
		pp = &(*pp)->next;
	*pp = rec->next;
	pthread_mutex_unlock(&graph_mu);
}

/* Outcome of removing @cb under its source's lock. */
enum removal { REMOVED, RUNNING_MINE, RUNNING_OTHER, NOT_THERE };

static enum removal
remove_locked(struct cancel_source *src, struct cancel_callback *cb)
{
	if (core_remove_registered(src, cb) != 0)
		return REMOVED;
	if (src->current_ == cb) {
		void *runner = ld_relaxed(&src->runner_);
		return cancel__frame_is_mine(runner) ? RUNNING_MINE
		                                     : RUNNING_OTHER;
	}
	return NOT_THERE;
}

/* Registrations that never reached a source's list (src_ is NULL). */
static int
try_unregister_detached(struct cancel_callback *cb)
{
	uint32_t st = ld_relaxed(&cb->state_);
	switch (st & CB_STATE_MASK) {
	case CB_ON_NONE:
		st_relaxed(&cb->state_, (st & ~CB_STATE_MASK) | CB_REMOVED);
		return 0;
	case CB_DONE:
		return released_running(cb, false) ? EINPROGRESS : EALREADY;
	default:
		return ENOENT;
	}
}

int
cancel_callback_try_unregister(struct cancel_callback *cb)
{
	if (cb == NULL)
		return EINVAL;
	/* Acquire pairs with the release store that released cb (run_list
	 * or teardown after it ran, or its own self-unregister). */
	struct cancel_source *src = ld_acquire(&cb->src_);
	if (src == NULL) {
		if (ld_relaxed(&cb->state_) & CB_QUEUED)
			return cancel__queue_unregister(cb, false);
		return try_unregister_detached(cb);
	}
	int rc;
	core_lock(src);
	switch (remove_locked(src, cb)) {
	case REMOVED:
		rc = 0;
		if (ld_relaxed(&cb->state_) & CB_QUEUED) {
			core_unlock(src);
			cancel__queue_removed(cb);
			return 0;
		}
		break;
	case RUNNING_MINE:
	case RUNNING_OTHER:
		rc = EINPROGRESS;
		break;
	default:
		if (ld_relaxed(&cb->state_) & CB_QUEUED) {
			/* Fired and settled on the source: ask the queue. */
			core_unlock(src);
			return cancel__queue_unregister(cb, false);
		}
		rc = (ld_relaxed(&cb->state_) & CB_STATE_MASK) == CB_DONE
		         ? EALREADY
		         : ENOENT;
		break;
	}
	core_unlock(src);
	return rc;
}

/* Everything but removing a registered callback uncontended. */
static __attribute__((noinline)) bool
unregister_slow(struct cancel_callback *cb)
{
	if (cb == NULL)
		return false;
	/* Acquire pairs with the release store that released cb (run_list
	 * or teardown after it ran, or its own self-unregister). */
	struct cancel_source *src = ld_acquire(&cb->src_);
	if (src == NULL) {
		if (ld_relaxed(&cb->state_) & CB_QUEUED)
			return cancel__queue_unregister(cb, true) == 0;
		uint32_t st = ld_relaxed(&cb->state_) & CB_STATE_MASK;
		if (st == CB_DONE) {
			/* Released itself and maybe still running: wait for
			 * its return (at once if that is us). */
			released_running(cb, true);
			return false;
		}
		return try_unregister_detached(cb) == 0;
	}

	/* Nothing below touches errno: park and the mutex preserve it. */
	bool removed = false;
	bool counted = false;
	core_lock(src);
	for (;;) {
		enum removal r = remove_locked(src, cb);
		if (r == REMOVED) {
			removed = true;
			break;
		}
		if (r == RUNNING_MINE) {
			/* Inside the callback itself: release cb to the
			 * caller now; the canceller will not touch it. It is
			 * complete and forgets its source (which the caller
			 * may destroy next), like any callback that ran; a
			 * concurrent unregister that already read the source
			 * still waits on current_. */
			struct cancel__frame *f = ld_relaxed(&src->runner_);
			f->cb_released = true;
			uint32_t st = ld_relaxed(&cb->state_);
			st_relaxed(&cb->state_,
			           (st & ~CB_STATE_MASK) | CB_DONE);
			if (!(st & CB_KEEP_SRC)) {
				cancel__released_add(f, cb);
				/* Release pairs with the acquire load of
				 * src_ in unregister: whoever sees NULL
				 * finds the frame on the list. */
				st_release(&cb->src_, NULL);
			}
			break;
		}
		if (r == NOT_THERE)
			break;
		/* Running on another thread: park until current_ moves on,
		 * unless that thread is (transitively) waiting for us. */
		struct wait_rec rec = {.thread = &cancel__tls, .src = src};
		pthread_mutex_lock(&graph_mu);
		if (closes_cycle(src)) {
			pthread_mutex_unlock(&graph_mu);
			break;
		}
		rec.next = graph;
		graph = &rec;
		pthread_mutex_unlock(&graph_mu);
		/* run_list bumps gen_ and wakes us; the lock we retake
		 * orders its writes before our return. */
		uint32_t g = ld_relaxed(&src->gen_) | GEN_WAIT;
		st_relaxed(&src->gen_, g);
		if (!counted) {
			/*
			 * From here to our last access we are a user of src
			 * (the lifetime mechanism, source.c): run_list clears
			 * GEN_WAIT when it wakes us, and destroy must still
			 * wait for us to leave. GEN_WAIT is set first: a
			 * destroy from inside the callback we wait for sees
			 * it with our count (acq_rel) and returns EBUSY; if
			 * it already sleeps on the count (DWAIT), wake it.
			 */
			uint64_t st = cancel__waiter_enter(src);
			if (st & CANCEL__S_DWAIT)
				cancel__unpark_all(cancel__state_word(src));
			counted = true;
		}
		core_unlock(src);
		cancel__park(&src->gen_, g, CANCEL_NEVER);
		graph_remove(&rec);
		core_lock(src);
	}
	/* A link leaves src's children (counted at register, same lock). */
	uint32_t fl = ld_relaxed(&cb->state_);
	if (fl & CB_KEEP_SRC)
		st_relaxed(&src->children_, ld_relaxed(&src->children_) - 1);
	core_unlock(src);
	if (counted)
		cancel__waiter_leave(src); /* last access to src */
	if (fl & CB_QUEUED) {
		/* The source side is settled (src_ is NULL unless removed
		 * here); a fired callback is the queue's business. */
		if (removed)
			cancel__queue_removed(cb);
		else
			removed = cancel__queue_unregister(cb, true) == 0;
	}
	return removed;
}

/* As register: no call and no saved register on the fast path. */
CANCEL_HOT_FN bool
cancel_callback_unregister(struct cancel_callback *cb)
{
	struct cancel_source *src;
	if (__builtin_expect(cb == NULL, 0))
		return false;
	/* Acquire pairs with the release store that released cb (run_list
	 * or teardown after it ran, or its own self-unregister). */
	src = ld_acquire(&cb->src_);
	if (__builtin_expect(src != NULL, 1) && core_unregister_fast(src, cb))
		return true;
	return unregister_slow(cb);
}
