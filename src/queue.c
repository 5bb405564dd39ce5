/*
 * Loop delivery: callbacks registered through a struct cancel_queue run on
 * the thread that calls cancel_queue_run(), never on the canceling thread.
 *
 * A queued registration is an ordinary entry of the source's callback list
 * (flag CB_QUEUED). When a cancel pops it, run_list does not call fn: still
 * holding the source's lock it calls cancel__queue_move(), which appends
 * the callback to its queue, with the ones after it bound for the same
 * queue (under the queue's spin lock, held only for a few pointer moves,
 * never while user code runs); run_list then makes the queue's fd readable
 * if the queue was empty (cancel__queue_signal, no lock held). The
 * callback's next_/prev_ are free for the queue's list from that moment: a
 * popped callback's source links are never read again.
 *
 * Where the queue is found. The callback keeps fn_, arg_ and src_ as any
 * other; its 32-bit spare_ holds the queue's index in a global table of
 * queue pointers (chunks that are never freed, so a lookup needs no lock).
 * A queue that still has registrations cannot be destroyed, so an index a
 * callback holds always names its own queue.
 *
 * States of a queued callback (low byte of state_): REGISTERED in the
 * source's list; CB_PENDING in the queue (fired, not run); DONE once run()
 * took it (q->current_ says whether fn still runs); REMOVED by unregister.
 * Unregister first settles the source side exactly as for any callback
 * (removing it if still REGISTERED; it is never current_ there, since it
 * moves from the source's list to the queue under both locks), then the
 * queue side under the queue's lock: a pending callback is taken out
 * and never runs (true); one running on another thread is waited for
 * (counted in q->users_, so destroy refuses meanwhile); from inside its own
 * fn (the run thread) it returns at once.
 *
 * The fd is readable exactly while the queue holds a pending callback
 * (whenever no cancel is between its push and its write): the push onto
 * an empty queue signals it, the pop (run or unregister) that empties it
 * drains it. The write happens after the lock is released, so the loop
 * thread, woken by it, does not find the lock still held by the writer
 * (with a sleeping mutex that cost a second wake-up, half the latency).
 * Meanwhile signaling_ counts the writer: a pop that empties the queue
 * then leaves the drain to the last writer, which drains under the lock
 * after its write if the queue is empty by then; destroy waits for it.
 *
 * The lock is a spin lock with the library's backoff (spin, then yield),
 * as the sources' list lock: its holders do a few pointer moves, or one
 * read of the eventfd to drain it.
 */
#include "internal.h"

#include "atomic.h"
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

/* q->gen_ bit: an unregister waits for the running callback. */
#define QGEN_WAIT 0x80000000u

/* ------------------------------------------------------------------ */
/* The index table                                                    */
/* ------------------------------------------------------------------ */

#define QCHUNK 256u
#define QCHUNKS 4096u /* up to 1,048,575 queues at once */

/* Chunk pointers: published with a release store, never freed. */
static struct cancel_queue **qtab[QCHUNKS];
static pthread_mutex_t qtab_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t qtab_next = 1; /* next never-used index (0 is none) */
static uint32_t *qtab_free;    /* stack of released indices */
static uint32_t qtab_nfree, qtab_capfree;

static struct cancel_queue **
slot(uint32_t idx)
{
	/* Acquire pairs with the release store that published the chunk. */
	struct cancel_queue **c = ld_acquire(&qtab[idx / QCHUNK]);
	return &c[idx % QCHUNK];
}

/* 0 and the new index in *@out, or ENOMEM. */
static int
index_take(struct cancel_queue *q, uint32_t *out)
{
	int rc = 0;
	pthread_mutex_lock(&qtab_mu);
	uint32_t idx;
	if (qtab_nfree > 0) {
		idx = qtab_free[--qtab_nfree];
	} else {
		idx = qtab_next;
		if (idx / QCHUNK >= QCHUNKS) {
			rc = ENOMEM;
			goto out;
		}
		if (qtab[idx / QCHUNK] == NULL) {
			struct cancel_queue **c =
			        cancel__malloc(QCHUNK * sizeof(struct cancel_queue *));
			if (c == NULL) {
				rc = ENOMEM;
				goto out;
			}
			memset(c, 0, QCHUNK * sizeof(struct cancel_queue *));
			/* Release pairs with the acquire load in slot(). */
			st_release(&qtab[idx / QCHUNK], c);
		}
		qtab_next++;
	}
	/* Published to fire() through the registration's lock hand-offs. */
	st_relaxed(slot(idx), q);
	*out = idx;
out:
	pthread_mutex_unlock(&qtab_mu);
	return rc;
}

/* Give @idx back; ENOMEM only if the free stack cannot grow (the index
 * is then simply never reused). */
static void
index_put(uint32_t idx)
{
	pthread_mutex_lock(&qtab_mu);
	st_relaxed(slot(idx), NULL);
	if (qtab_nfree == qtab_capfree) {
		uint32_t cap = qtab_capfree ? qtab_capfree * 2 : 64;
		uint32_t *t = cancel__malloc(cap * sizeof(*t));
		if (t == NULL)
			goto out;
		if (qtab_nfree > 0)
			memcpy(t, qtab_free, qtab_nfree * sizeof(*t));
		cancel__free(qtab_free);
		qtab_free = t;
		qtab_capfree = cap;
	}
	qtab_free[qtab_nfree++] = idx;
out:
	pthread_mutex_unlock(&qtab_mu);
}

static struct cancel_queue *
queue_of(const struct cancel_callback *cb)
{
	return ld_relaxed(slot(ld_relaxed(&cb->spare_)));
}

/* ------------------------------------------------------------------ */
/* The queue                                                          */
/* ------------------------------------------------------------------ */

static void
lock(struct cancel_queue *q)
{
	unsigned spins = 0;
	/* Acquire pairs with the release store in unlock(). */
	while (xchg_acquire(&q->lock_, 1u) != 0) {
		/* Read-only spin until the holder's release store. */
		while (ld_relaxed(&q->lock_) != 0)
			cancel__backoff(&spins);
	}
}

static void
unlock(struct cancel_queue *q)
{
	/* Release pairs with the acquire exchange in lock(). */
	st_release(&q->lock_, 0u);
}

static void
set_state(struct cancel_callback *cb, uint32_t state)
{
	uint32_t st = ld_relaxed(&cb->state_);
	st_relaxed(&cb->state_, (st & ~CB_STATE_MASK) | state);
}

/* Under q's lock: take @cb out of the pending list; drain when empty
 * (unless a writer is still to signal: it drains then). */
static void
pending_unlink(struct cancel_queue *q, struct cancel_callback *cb)
{
	struct cancel_callback *prev = cb->prev_;
	if (prev != NULL)
		prev->next_ = cb->next_;
	else
		q->head_ = cb->next_;
	if (cb->next_ != NULL)
		cb->next_->prev_ = prev;
	else
		q->tail_ = prev;
	cb->next_ = NULL;
	cb->prev_ = NULL;
	q->pending_--;
	if (q->head_ == NULL && q->signaling_ == 0)
		cancel__wakefd_drain(q->rfd_);
}

int
cancel_queue_init(struct cancel_queue *q)
{
	if (q == NULL)
		return EINVAL;
	CANCEL_ERRNO_SAVE();
	memset(q, 0, sizeof(*q));
	int rfd, wfd;
	int rc = cancel__wakefd_open(&rfd, &wfd);
	if (rc != 0)
		goto out;
	uint32_t idx;
	rc = index_take(q, &idx);
	if (rc != 0) {
		cancel__wakefd_close(rfd, wfd);
		goto out;
	}
	cancel__live_fd(rfd == wfd ? 1 : 2);
	q->rfd_ = rfd;
	q->wfd_ = wfd;
	q->index_ = idx;
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}

int
cancel_queue_fd(struct cancel_queue *q)
{
	return q != NULL ? q->rfd_ : -1;
}

int
cancel_queue_destroy(struct cancel_queue *q)
{
	if (q == NULL)
		return EINVAL;
	lock(q);
	bool busy = q->registered_ != 0 || q->users_ != 0;
	unsigned spins = 0;
	while (!busy && q->signaling_ != 0) {
		/* A cancel whose callback already ran is still writing the
		 * fd (no callback left: nothing can start another). */
		unlock(q);
		cancel__backoff(&spins);
		lock(q);
	}
	unlock(q);
	if (busy)
		return EBUSY;
	CANCEL_ERRNO_SAVE();
	index_put(q->index_);
	cancel__wakefd_close(q->rfd_, q->wfd_);
	cancel__live_fd(q->rfd_ == q->wfd_ ? -1 : -2);
	memset(q, 0, sizeof(*q));
	q->rfd_ = q->wfd_ = -1;
	CANCEL_ERRNO_RESTORE();
	return 0;
}

int
cancel_callback_register_queued(struct cancel_callback *cb, cancel_fn fn,
                                void *arg, struct cancel_queue *q,
                                cancel_token tok)
{
	if (cb == NULL || fn == NULL || q == NULL)
		return EINVAL;
	if (tok.src_ == NULL) {
		/* Recorded only: nothing can fire it, it holds no queue. */
		return cancel__register(cb, fn, arg, NULL, 0);
	}
	/* Counted first: destroy(q) must refuse from the moment the
	 * registration can reach the queue. */
	lock(q);
	q->registered_++;
	unlock(q);
	/* Read by fire() after it pops cb: the push below (under the
	 * source's lock) publishes it. */
	st_relaxed(&cb->spare_, q->index_);
	int rc = cancel__register(cb, fn, arg, tok.src_, CB_QUEUED);
	if (rc != 0) {
		lock(q);
		q->registered_--;
		unlock(q);
	}
	return rc;
}

/*
 * Called by run_list (source.c) with @src's lock held, for @cb just popped
 * from @src's list with CB_QUEUED: append it to its queue, and with it the
 * callbacks that follow it in @src's list bound for the same queue, under
 * one hold of the queue's lock (a cancel of 1,024 callbacks on one queue
 * takes that lock once). Under both locks each leaves its source for the
 * queue in one step: it is never its source's current_, so an unregister
 * either removes it from the source list or finds it PENDING in the queue.
 * Never runs user code, never allocates, makes no system call.
 * Returns the queue if it was empty (the caller signals it with
 * cancel__queue_signal once it has dropped @src's lock), else NULL.
 */
struct cancel_queue *
cancel__queue_move(struct cancel_source *src, struct cancel_callback *cb)
{
	uint32_t idx = ld_relaxed(&cb->spare_);
	struct cancel_queue *q = queue_of(cb);
	lock(q);
	bool first = q->head_ == NULL;
	for (;;) {
		set_state(cb, CB_PENDING);
		/* Release pairs with the acquire load of src_ in unregister:
		 * one that sees NULL asks the queue, under its lock. */
		st_release(&cb->src_, NULL);
		cb->next_ = NULL;
		cb->prev_ = q->tail_;
		if (q->tail_ != NULL)
			q->tail_->next_ = cb;
		else
			q->head_ = cb;
		q->tail_ = cb;
		q->pending_++;
		/* The next one too, if it goes to the same queue. */
		cb = src->head_;
		if (cb == NULL || !(ld_relaxed(&cb->state_) & CB_QUEUED) ||
		    ld_relaxed(&cb->spare_) != idx)
			break;
		st_relaxed(&src->head_, cb->next_);
		if (cb->next_ != NULL)
			cb->next_->prev_ = NULL;
	}
	if (first)
		q->signaling_++; /* one signal per batch */
	unlock(q);
	return first ? q : NULL;
}

/*
 * Make @q's fd readable for the batch cancel__queue_move() started, with
 * no source lock held. The callbacks may have run and be gone by now:
 * only q is touched, and destroy(q) waits for signaling_ to drop.
 */
void
cancel__queue_signal(struct cancel_queue *q)
{
	cancel__wakefd_signal(q->wfd_);
	lock(q);
	if (--q->signaling_ == 0 && q->head_ == NULL)
		cancel__wakefd_drain(q->rfd_); /* emptied before our write */
	unlock(q);
}

size_t
cancel_queue_run(struct cancel_queue *q)
{
	if (q == NULL)
		return 0;
	CANCEL_ERRNO_SAVE();
	size_t ran = 0;
	lock(q);
	/* What is queued now; callbacks queued by these run next time. */
	size_t budget = q->pending_;
	q->runner_ = &cancel__tls;
	while (ran < budget && q->head_ != NULL) {
		struct cancel_callback *cb = q->head_;
		pending_unlink(q, cb);
		set_state(cb, CB_DONE);
		q->current_ = cb;
		cancel_fn fn = cb->fn_;
		void *arg = cb->arg_;
		unlock(q);

		fn(arg);
		ran++;

		/* fn may have unregistered (false: its own run) and freed
		 * cb: it is not touched again. */
		lock(q);
		q->current_ = NULL;
		q->registered_--;
		uint32_t g = ld_relaxed(&q->gen_);
		if (g & QGEN_WAIT) {
			/* Waiters retake the lock: its hand-off orders our
			 * writes before their return. */
			st_relaxed(&q->gen_, (g + 1) & ~QGEN_WAIT);
			cancel__unpark_all(&q->gen_);
		}
	}
	q->runner_ = NULL;
	if (q->head_ == NULL && q->signaling_ == 0)
		cancel__wakefd_drain(q->rfd_);
	unlock(q);
	CANCEL_ERRNO_RESTORE();
	return ran;
}

/*
 * The queue side of unregister, once the source side has settled (@cb is
 * no longer in its source's list nor being enqueued, so its src_ is NULL).
 * 0 removed; EINPROGRESS running (and not waited for: @wait false, or it
 * runs on this thread); EALREADY ran; ENOENT removed before.
 */
int
cancel__queue_unregister(struct cancel_callback *cb, bool wait)
{
	struct cancel_queue *q = queue_of(cb);
	int rc;
	lock(q);
	for (;;) {
		uint32_t st = ld_relaxed(&cb->state_) & CB_STATE_MASK;
		if (st == CB_PENDING) {
			pending_unlink(q, cb);
			set_state(cb, CB_REMOVED);
			q->registered_--;
			rc = 0;
			break;
		}
		if (q->current_ != cb) {
			rc = st == CB_DONE ? EALREADY : ENOENT;
			break;
		}
		if (!wait || q->runner_ == (void *)&cancel__tls) {
			rc = EINPROGRESS;
			break;
		}
		/* Running on the loop thread: wait for its return. */
		uint32_t g = ld_relaxed(&q->gen_) | QGEN_WAIT;
		st_relaxed(&q->gen_, g);
		q->users_++;
		unlock(q);
		int cs;
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
		cancel__park(&q->gen_, g, CANCEL_NEVER);
		pthread_setcancelstate(cs, NULL);
		lock(q);
		q->users_--;
	}
	unlock(q); /* last access to q */
	return rc;
}

/* The source side removed a queued callback before it fired. */
void
cancel__queue_removed(struct cancel_callback *cb)
{
	struct cancel_queue *q = queue_of(cb);
	lock(q);
	q->registered_--;
	unlock(q);
}
