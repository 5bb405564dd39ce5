/*
 * Private to the core files (source.c, callback.c, link.c): the run frame
 * a cancel keeps on its own stack while it runs a source's callbacks, the
 * callback states and the per-thread propagation queue.
 */
#ifndef CANCEL_CORE_H
#define CANCEL_CORE_H

#include "internal.h"

#include "atomic.h"

/*
 * One per source whose callback list this thread is running. Lives on the
 * running thread's stack and is only ever dereferenced by that thread: other
 * threads compare the pointer in runner_ but never follow it.
 */
struct cancel__frame {
	struct cancel__frame *outer;  /* the frame this one runs inside */
	struct cancel_source *src;    /* the source being canceled */
	bool cb_released;             /* current callback unregistered itself */
	bool src_destroyed;           /* a callback destroyed src */
	/* While the released callback still runs, the frame sits on a global
	 * list (callback.c) so other threads can wait for it without the
	 * source: released_cb is that callback, rel_next the list link. */
	struct cancel_callback *released_cb;
	struct cancel__frame *rel_next;
	uint32_t rel_stamp;           /* also in released_cb->spare_ */
};

/*
 * Per thread: the stack of frames, and children whose propagation was queued
 * because link nesting got deep (CANCEL_LINK_INLINE_DEPTH).
 */
struct cancel__tls {
	struct cancel__frame *top;
	struct cancel_source *qhead;
	struct cancel_source *qtail;
	unsigned depth;               /* nested link propagations */
	struct cancel__frame queued;  /* runner_ of a source in our queue */
};

extern __attribute__((tls_model("initial-exec"))) _Thread_local struct cancel__tls
    cancel__tls;

/* Callback states (low byte of cancel_callback.state_). */
#define CB_NONE 0u        /* never registered, or registration refused */
#define CB_REGISTERED 1u  /* in its source's list */
/* 2 was RUNNING: a popped callback is DONE at once; current_ says
 * whether its fn still runs. */
#define CB_DONE 3u        /* popped by a cancel (fn running while it is
                           * its source's current_, else returned), or
                           * unregistered itself from its fn */
#define CB_REMOVED 4u     /* unregistered before it ran */
#define CB_ON_NONE 5u     /* registered on CANCEL_TOKEN_NONE: recorded only */
#define CB_PENDING 6u     /* queued callback fired, waiting in its queue */
#define CB_STATE_MASK 0xffu
#define CB_KEEP_SRC 0x100u /* internal link: src_ kept after it ran */
#define CB_QUEUED 0x200u   /* runs through a cancel_queue (queue.c); its
                            * spare_ holds the queue's index */

/* gen_ bit: an unregister waits for the running callback to return. */
#define GEN_WAIT 0x80000000u

/* True if @runner (a source's runner_) is a frame of the calling thread. */
CANCEL_HIDDEN bool cancel__frame_is_mine(const void *runner);

/* The contended half of core_lock() (source.c). */
CANCEL_HIDDEN void cancel__lock_slow(struct cancel_source *src);

/* Inline fast paths of the list lock for the core's hot paths. */
static inline void
core_lock(struct cancel_source *src)
{
	/* Acquire pairs with the release store in core_unlock(). */
	if (xchg_acquire(&src->lock_, 1u) != 0)
		cancel__lock_slow(src);
}

static inline void
core_unlock(struct cancel_source *src)
{
	/* Release pairs with the acquire exchange in core_lock(). */
	st_release(&src->lock_, 0u);
}

/*
 * Take the lock only while not canceled (register's entry). CANCELED is
 * read under the lock: run_list takes the lock only after the CAS that set
 * it, so either we push before run_list looks at the list, or our lock
 * acquire follows its unlock and this acquire load (pairing with
 * cancel__begin's release CAS) sees CANCELED. No unlocked peek first: under
 * contention a shared read then the exchange costs two line transfers.
 */
static inline bool
core_lock_unless_canceled(struct cancel_source *src)
{
	core_lock(src);
	if (ld_acquire(&src->state_) & CANCEL__S_CANCELED) {
		core_unlock(src);
		return false;
	}
	return true;
}

/*
 * The callback list: intrusive, doubly linked, pushed at the head so the
 * canceller pops last-registered first. Under src's lock.
 */
static inline void
core_list_push(struct cancel_source *src, struct cancel_callback *cb)
{
	cb->prev_ = NULL;
	cb->next_ = src->head_;
	if (src->head_ != NULL)
		src->head_->prev_ = cb;
	/* Atomic (relaxed) only for the library thread's prefetch hint,
	 * which reads head_ without the lock (libthread.c run_timers). */
	st_relaxed(&src->head_, cb);
}

static inline void
core_list_unlink(struct cancel_source *src, struct cancel_callback *cb)
{
	struct cancel_callback *prev = cb->prev_;
	if (prev != NULL)
		prev->next_ = cb->next_;
	else
		st_relaxed(&src->head_, cb->next_);
	if (cb->next_ != NULL)
		cb->next_->prev_ = prev;
	cb->next_ = NULL;
	cb->prev_ = NULL;
}

/*
 * Under src's lock, src not canceled: fill in @cb and push it. A link
 * (KEEP_SRC) counts as a child of src, under src's lock: destroy reads the
 * count under the same lock.
 */
static inline void
core_push_locked(struct cancel_source *src, struct cancel_callback *cb,
                 cancel_fn fn, void *arg, uint32_t flags)
{
	cb->fn_ = fn;
	cb->arg_ = arg;
	if (!(flags & CB_QUEUED))
		st_relaxed(&cb->spare_, 0u); /* no released-list stamp */
	st_relaxed(&cb->src_, src);
	st_relaxed(&cb->state_, CB_REGISTERED | flags);
	core_list_push(src, cb);
	if (flags & CB_KEEP_SRC)
		st_relaxed(&src->children_, ld_relaxed(&src->children_) + 1);
}

/*
 * Under src's lock: if @cb is registered (in the list, not yet popped by a
 * cancel), take it out, mark it removed and return its state before (never
 * 0); else return 0. A plain callback forgets its source; a link keeps it
 * (it leaves src's children when its child unregisters it, whatever this
 * returns: the caller's business).
 */
static inline uint32_t
core_remove_registered_st(struct cancel_source *src,
                          struct cancel_callback *cb, uint32_t st)
{
	if ((st & CB_STATE_MASK) != CB_REGISTERED)
		return 0;
	core_list_unlink(src, cb);
	st_relaxed(&cb->state_, (st & ~CB_STATE_MASK) | CB_REMOVED);
	if (!(st & CB_KEEP_SRC))
		st_relaxed(&cb->src_, NULL);
	return st;
}

/* The same, reading @cb's state under the lock itself. */
static inline uint32_t
core_remove_registered(struct cancel_source *src, struct cancel_callback *cb)
{
	return core_remove_registered_st(src, cb, ld_relaxed(&cb->state_));
}

/* Try the list lock once, without spinning: the hot paths' entry. */
static inline bool
core_trylock(struct cancel_source *src)
{
	/* Acquire pairs with the release store in core_unlock(). */
	return __builtin_expect(xchg_acquire(&src->lock_, 1u) == 0, 1);
}

/*
 * The uncontended registration (register, one-parent init_linked): if
 * src's lock is free and src is not canceled, push @cb and return true.
 * False changes nothing: the caller's general path starts over.
 */
static inline bool
core_register_fast(struct cancel_source *src, struct cancel_callback *cb,
                   cancel_fn fn, void *arg, uint32_t flags)
{
	if (!core_trylock(src))
		return false;
	/* CANCELED under the lock: see core_lock_unless_canceled. */
	if (ld_acquire(&src->state_) & CANCEL__S_CANCELED) {
		core_unlock(src);
		return false;
	}
	core_push_locked(src, cb, fn, arg, flags);
	/* Release: publishes cb to the canceller's lock acquire. */
	core_unlock(src);
	return true;
}

/*
 * The uncontended unregistration (unregister, destroy's unlink): if
 * src's lock is free and @cb is still in the list, take it out and return
 * true; a link also leaves src's children (counted at register, same
 * lock). False changes nothing: the caller's general path starts over.
 */
static inline bool
core_unregister_fast(struct cancel_source *src, struct cancel_callback *cb)
{
	if (!core_trylock(src))
		return false;
	/* One load of the state serves both checks. */
	uint32_t st = ld_relaxed(&cb->state_);
	if (__builtin_expect(st & CB_QUEUED, 0)) {
		core_unlock(src); /* the general path tells its queue */
		return false;
	}
	st = core_remove_registered_st(src, cb, st);
	if (st & CB_KEEP_SRC)
		st_relaxed(&src->children_, ld_relaxed(&src->children_) - 1);
	/* Release pairs with the next locker's acquire. */
	core_unlock(src);
	return st != 0;
}

/*
 * A fresh source: every field that is read before it is written gets its
 * zero, one word store each (on the benchmark machine memset() and vector
 * stores cost twice as much as word stores, and relaxed stores cannot be
 * merged into vector ones). Left unwritten, because every reader first
 * checks the field that says they are valid:
 *   spare_                  the fd's fork generation: set with the fd
                             (fd.c), read only while wfd_ is set
 *   next_deferred_          set when queued (propagation, signal finish)
 *   deadline_, tnext_, tpprev_
 *                           set when armed; read only while armed
 *                           (tflags_ ARMED) or by the timer wheel itself
 *   link_                   set by the link's registration; read only
 *                           for index < nlinks_
 *   cause_msg_, cause_when_ set with the cause; read only once
 *                           cause_origin_ (zeroed) is set
 * CANCEL_SOURCE_INITIALIZER zeroes them all, which is just as good.
 */
static inline void
core_source_zero(struct cancel_source *src)
{
	st_relaxed(&src->state_, 0u);
	st_relaxed(&src->lock_, 0u);
	st_relaxed(&src->head_, NULL);
	st_relaxed(&src->runner_, NULL);
	st_relaxed(&src->links_, NULL);
	st_relaxed(&src->nlinks_, 0u);
	st_relaxed(&src->children_, 0u);
	st_relaxed(&src->fd_, 0);
	st_relaxed(&src->wfd_, 0);
	st_relaxed(&src->tflags_, 0u);
	st_relaxed(&src->gen_, 0u);
	st_relaxed(&src->current_, NULL);
	st_relaxed(&src->owner_, NULL);
	/* No cause published (source.c): cause_msg_ and cause_when_ are
	 * read only once cause_origin_ is set. */
	st_relaxed(&src->cause_origin_, NULL);
}

/* Register @cb on @src unless it is canceled: 0 or ECANCELED. */
CANCEL_HIDDEN int cancel__register(struct cancel_callback *cb, cancel_fn fn,
                                   void *arg, struct cancel_source *src,
                                   uint32_t flags);

/*
 * A child that @link_fire just canceled: run its callbacks now, or queue
 * them for the outermost finish when nesting is deep.
 */
CANCEL_HIDDEN void cancel__propagate(struct cancel_source *child);

/*
 * @cb, the callback @f runs, is released while it still runs (it
 * unregistered itself, or destroyed its source): put @f on the global list
 * other threads' unregister waits on. run_list calls released_done once fn
 * returns.
 */
CANCEL_HIDDEN void cancel__released_add(struct cancel__frame *f,
                                        struct cancel_callback *cb);

/* queue.c: a queued callback's hooks (see there). */
struct cancel_queue;
CANCEL_HIDDEN struct cancel_queue *
cancel__queue_move(struct cancel_source *src, struct cancel_callback *cb);
CANCEL_HIDDEN void cancel__queue_signal(struct cancel_queue *q);
CANCEL_HIDDEN int cancel__queue_unregister(struct cancel_callback *cb,
                                           bool wait);
CANCEL_HIDDEN void cancel__queue_removed(struct cancel_callback *cb);

/* The released callback of @f returned: drop @f from the global list. */
CANCEL_HIDDEN void cancel__released_done(struct cancel__frame *f);

/* link.c: drop @src's links to its parents (destroy). */
CANCEL_HIDDEN void cancel__unlink_parents(struct cancel_source *src);

#endif /* CANCEL_CORE_H */
