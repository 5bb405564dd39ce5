/*
 * The source/token state machine: the state word, the callback run loop,
 * destroy, and the token queries.
 *
 * The state lives in one 64-bit word (see internal.h): the cancel flag and
 * its reason are written by one CAS. The callback list has its own lock
 * word (lock_), so unlocking is a plain release store, not a second
 * read-modify-write of the busy state word. No callback can slip in after
 * cancel started: cancel sets CANCELED *before* it first takes the lock,
 * and register reads CANCELED *under* the lock. So either register's
 * critical section comes first (its push is seen by the canceller's lock
 * acquire), or the canceller's CAS happens before register's lock acquire
 * (through the canceller's unlock) and register sees the flag and runs
 * inline. tests/model/callback.pml checks this, and variants that check
 * the flag before locking, or drain before the CAS, fail there.
 *
 * The canceller pops one callback at a time under the lock, marks it
 * running in the source (current_), drops the lock, runs it, and retakes
 * the lock to mark it done. An unregister that finds its callback running
 * on another thread waits for current_ to move on (gen_ is the futex word
 * it parks on); one that finds it running on its own thread (inside the
 * callback, at any depth) returns at once. The run frame on the
 * canceller's stack records a callback that released itself or a source
 * destroyed from inside a callback, so the loop never touches freed memory.
 */
#include "internal.h"

#include "atomic.h"
#include "core.h"

#include <errno.h>

__attribute__((tls_model("initial-exec"))) _Thread_local struct cancel__tls
    cancel__tls;

bool
cancel__frame_is_mine(const void *runner)
{
	if (runner == NULL)
		return false;
	if (runner == &cancel__tls.queued)
		return true;
	for (struct cancel__frame *f = cancel__tls.top; f != NULL; f = f->outer)
		if ((const void *)f == runner)
			return true;
	return false;
}

void
cancel__lock_slow(struct cancel_source *src)
{
	unsigned spins = 0;
	do {
		/* Read-only spin: the line stays shared until the holder's
		 * release store; only then try the exchange again. */
		while (ld_relaxed(&src->lock_) != 0)
			cancel__backoff(&spins);
		/* Acquire pairs with the release store in core_unlock(). */
	} while (xchg_acquire(&src->lock_, 1u) != 0);
}

/*
 * The leak report's hook (CANCEL_DEBUG=leaks) is one load of a flag that
 * never changes after load and a branch predicted not taken; the work is
 * a tail call to debug.c, so neither init nor the fast destroy saves a
 * register for it.
 */
void
cancel_source_init(struct cancel_source *src)
{
	if (src != NULL) {
		core_source_zero(src);
		if (__builtin_expect(cancel__debug_leaks, 0))
			cancel__debug_created(src, __builtin_return_address(0),
			                      0);
	}
}

cancel_token
cancel_source_token(struct cancel_source *src)
{
	cancel_token tok;
	tok.src_ = src;
	return tok;
}

/*
 * The cause (cause_msg_, cause_origin_, cause_when_ at the end of the
 * source). Only the cancel that wins the CAS setting CANCELED writes them,
 * once per life of the source, right after its CAS: message and time with
 * relaxed stores, then the origin with a release store. A NULL origin
 * means "not published yet" (init and the all-zero initializer clear it;
 * a published origin is never NULL). A reader that has seen CANCELED
 * (which carries the winner's reason) waits for the origin with acquire
 * loads (cancel__cause_get), then reads the rest, so reason, message,
 * origin and time all come from that one winner and are never mixed.
 *
 * Why waiting is short: the winner reads the clock (and, for a linked
 * child, the parent's cause) BEFORE its CAS, so between the CAS and the
 * release store there are three plain stores and no call. A reader spins
 * only if it looked in that window and the winner was preempted or
 * interrupted by a signal handler there; a handler runs to completion and
 * a preempted thread runs again, and the reader yields to them (its
 * backoff calls sched_yield). The one case that could not finish is a
 * reader on the winner's own thread, i.e. in a handler that interrupted
 * the window: cancel_token_cause() is documented as not for handlers,
 * and the library itself reads causes only in normal context.
 *
 * Cost: is_canceled and the state word are untouched, the winner adds
 * one clock read and three stores, init one store; destroy, register
 * and unregister nothing.
 */
void
cancel__cause_publish(struct cancel_source *src, const struct cancel__cause *c)
{
	st_relaxed(&src->cause_msg_, c->msg);
	st_relaxed(&src->cause_when_, c->when);
	/* Release pairs with the acquire load in cancel__cause_get(). */
	st_release(&src->cause_origin_, c->origin);
}

void
cancel__cause_get(const struct cancel_source *src, struct cancel__cause *c)
{
	unsigned spins = 0;
	const struct cancel_source *o;
	/* Acquire pairs with the release store in cancel__cause_publish(). */
	while ((o = ld_acquire(&src->cause_origin_)) == NULL)
		cancel__backoff(&spins);
	c->origin = o;
	c->msg = ld_relaxed(&src->cause_msg_);
	c->when = ld_relaxed(&src->cause_when_);
}

/* cancel__begin's body; @polled: see cancel__begin_polled. */
static inline bool
begin(struct cancel_source *src, int reason, bool from_signal,
      const char *msg, const struct cancel_source *parent, bool polled)
{
	uint64_t s = ld_relaxed(&src->state_);
	if (s & CANCEL__S_CANCELED)
		return false;
	/* The cause is gathered before the CAS (see cancel__cause_publish).
	 * A linked child takes its canceled parent's, published before the
	 * parent ran the callback that calls us. */
	struct cancel__cause c;
	if (parent != NULL) {
		cancel__cause_get(parent, &c);
	} else {
		c.msg = msg;
		c.origin = src;
		c.when = cancel__now_ns();
	}
	uint64_t n;
	do {
		if (s & CANCEL__S_CANCELED)
			return false;
		n = (s & 0xffffffffu) | CANCEL__S_CANCELED |
		    (from_signal ? CANCEL__S_SIGNAL : 0) |
		    ((uint64_t)(uint32_t)reason << CANCEL__S_REASON_SHIFT);
		/*
		 * Release: pairs with the acquire load in
		 * cancel_token_is_canceled() and the waiters' reloads, which
		 * then see the reason with the flag. Acquire: we read the
		 * waiter count and FD bit published by their fetch_add/CAS.
		 */
	} while (!cas_acq_rel(&src->state_, &s, n));
	cancel__cause_publish(src, &c);

	/* The fd first: a poller also counts as a waiter, and a futex wake
	 * with nobody parked would only delay it (measured: ~1.3 us). */
	if (s & CANCEL__S_FD)
		cancel__source_fd_signal(src);
	/* A polling waiter that cancels is counted but not parked. */
	if (cancel__state_waiters(s) > (polled ? 1u : 0u) &&
	    (!from_signal || cancel__unpark_signal_safe))
		cancel__unpark_all(cancel__state_word(src));
	/* Waiters polling a watched descriptor sleep in ppoll, not on the
	 * word: wake them (a handler cannot take the lock: the deferred
	 * finish does it, cancel__signal_finish). */
	if ((s & CANCEL__S_POLLED) && !from_signal && !polled)
		cancel__watch_wake(src);
	if (from_signal)
		cancel__signal_post(src);
	return true;
}

bool
cancel__begin(struct cancel_source *src, int reason, bool from_signal,
              const char *msg, const struct cancel_source *parent)
{
	return begin(src, reason, from_signal, msg, parent, false);
}

bool
cancel__begin_polled(struct cancel_source *src, int reason, const char *msg)
{
	return begin(src, reason, false, msg, NULL, true);
}

static void drain_queue(void);

/*
 * Run @src's callbacks one at a time, last registered first; set DONE.
 * The @outermost run (the one a cancel call started) also drains this
 * thread's queue of deep children after each callback, so they finish
 * before its next callback runs: a later callback may wait for a thread
 * that destroys one of them (tests/model/link.pml, DRAIN_EACH).
 */
/* Under @src's lock (dropped and retaken to signal): see queue.c. */
static __attribute__((noinline, cold)) void
move_queued(struct cancel_source *src, struct cancel_callback *cb)
{
	struct cancel_queue *q = cancel__queue_move(src, cb);
	if (q != NULL) {
		core_unlock(src);
		cancel__queue_signal(q);
		core_lock(src);
	}
}

static void
run_list(struct cancel_source *src, bool outermost)
{
	struct cancel__frame frame = {.outer = cancel__tls.top, .src = src};
	cancel__tls.top = &frame;

	core_lock(src);
	st_relaxed(&src->runner_, (void *)&frame);
	st_relaxed(&src->owner_, (void *)&cancel__tls);
	for (;;) {
		struct cancel_callback *cb = src->head_;
		if (cb == NULL)
			break;
		/* A popped callback's next_ is never read again. */
		st_relaxed(&src->head_, cb->next_);
		if (cb->next_ != NULL)
			cb->next_->prev_ = NULL;
		uint32_t st = ld_relaxed(&cb->state_);
		if (__builtin_expect(st & CB_QUEUED, 0)) {
			/* To its queue (it runs on the loop), with those
			 * after it bound for the same queue, still under
			 * our lock: never current_, no user code here. */
			move_queued(src, cb);
			continue;
		}
		/* DONE at once: readers tell a running callback by
		 * current_, not by its state. */
		st_relaxed(&cb->state_, (st & ~CB_STATE_MASK) | CB_DONE);
		src->current_ = cb;
		frame.cb_released = false;
		cancel_fn fn = cb->fn_;
		void *arg = cb->arg_;
		core_unlock(src);

		fn(arg);

		if (__builtin_expect(frame.cb_released | frame.src_destroyed,
		                     0)) {
			/* fn released cb (it may be gone: never touch it),
			 * or destroyed src. released_cb is set only with
			 * cb_released, and cleared by released_done. */
			if (frame.released_cb != NULL) {
				/* Let threads waiting for its return go. */
				cancel__released_done(&frame);
			}
			if (frame.src_destroyed) {
				/* Do not touch src again. */
				cancel__tls.top = frame.outer;
				return;
			}
			core_lock(src);
			src->current_ = NULL;
		} else {
			core_lock(src);
			src->current_ = NULL;
			/* Release pairs with the acquire load of src_ in
			 * unregister/try_unregister: an owner that sees
			 * NULL there reuses cb after all our writes to it. */
			if (!(st & CB_KEEP_SRC))
				st_release(&cb->src_, NULL);
		}
		uint32_t g = ld_relaxed(&src->gen_);
		if (g & GEN_WAIT) {
			/* Unregisters parked on gen_ retake the lock: their
			 * acquire pairs with our unlock's release. */
			st_relaxed(&src->gen_, (g + 1) & ~GEN_WAIT);
			core_unlock(src);
			cancel__unpark_all(&src->gen_);
			core_lock(src);
		}
		if (outermost && cancel__tls.qhead != NULL) {
			core_unlock(src);
			drain_queue();
			core_lock(src);
		}
	}
	st_relaxed(&src->runner_, NULL);
	st_relaxed(&src->owner_, NULL);
	core_unlock(src);
	cancel__tls.top = frame.outer;

	/* Release pairs with destroy's acquire load that sees DONE: all our
	 * writes to src happen before its teardown. */
	uint64_t old = fetch_or_release(&src->state_, CANCEL__S_DONE);
	if (old & CANCEL__S_DWAIT)
		cancel__unpark_all(cancel__state_word(src));
}

static void
drain_queue(void)
{
	struct cancel_source *c;
	while ((c = cancel__tls.qhead) != NULL) {
		cancel__tls.qhead = c->next_deferred_;
		if (cancel__tls.qhead == NULL)
			cancel__tls.qtail = NULL;
		c->next_deferred_ = NULL;
		run_list(c, false);
	}
}

void
cancel__finish(struct cancel_source *src)
{
	/* A finish started while this thread already runs callbacks (a
	 * frame is on its stack) is nested: the outermost one drains. */
	bool outermost = cancel__tls.top == NULL;
	run_list(src, outermost);
	if (outermost)
		drain_queue();
}

void
cancel__propagate(struct cancel_source *child)
{
	if (cancel__tls.depth < CANCEL_LINK_INLINE_DEPTH) {
		cancel__tls.depth++;
		run_list(child, false);
		cancel__tls.depth--;
		return;
	}
	/* Deep chain: queue it for the outermost finish on this thread. The
	 * marker tells destroy on this thread that the work is its own. */
	st_relaxed(&child->runner_, (void *)&cancel__tls.queued);
	child->next_deferred_ = NULL;
	if (cancel__tls.qtail != NULL)
		cancel__tls.qtail->next_deferred_ = child;
	else
		cancel__tls.qhead = child;
	cancel__tls.qtail = child;
}

static void
dequeue(struct cancel_source *src)
{
	struct cancel_source **pp = &cancel__tls.qhead;
	struct cancel_source *prev = NULL;
	while (*pp != NULL && *pp != src) {
		prev = *pp;
		pp = &(*pp)->next_deferred_;
	}
	if (*pp == NULL)
		return;
	*pp = src->next_deferred_;
	if (cancel__tls.qtail == src)
		cancel__tls.qtail = prev;
	src->next_deferred_ = NULL;
}

void
cancel__signal_finish(struct cancel_source *src)
{
	/* The handler could wake only what is signal-safe to wake. */
	uint64_t s = ld_acquire(&src->state_);
	if (!cancel__unpark_signal_safe && cancel__state_waiters(s) != 0)
		cancel__unpark_all(cancel__state_word(src));
	if (s & CANCEL__S_POLLED)
		cancel__watch_wake(src);
	cancel__finish(src);
}

/*
 * The lifetime mechanism. Every call that can block, loop or park while it
 * uses @src (the waits, cancel_poll, each I/O call for its whole duration,
 * cancel_cond_wait until it has its mutex back and has decided its result,
 * an unregister parked on a running callback) counts itself here first
 * and leaves with its last access to @src. destroy() returns EBUSY while
 * the count is not zero on a source that is not canceled, and waits for it
 * to reach zero on a canceled one (the cancel has woken them all), so once
 * destroy has returned 0 no such call touches @src again
 * (tests/model/lifetime.pml).
 */
uint64_t
cancel__waiter_enter(struct cancel_source *src)
{
	/* Acq_rel: our count is visible to cancel__begin's CAS (which then
	 * wakes us), and we read a CANCELED set before it. */
	return fetch_add_acq_rel(&src->state_, (uint64_t)CANCEL__S_WAITER) +
	       CANCEL__S_WAITER;
}

void
cancel__unhold(struct cancel_source *src)
{
	core_lock(src);
	st_relaxed(&src->children_, ld_relaxed(&src->children_) - 1);
	/* Release (the unlock) pairs with destroy's acquire of children_:
	 * the holder's accesses come before the teardown. Last access. */
	core_unlock(src);
}

void
cancel__waiter_leave(struct cancel_source *src)
{
	/* Release pairs with destroy's acquire load seeing the count at 0. */
	uint64_t old =
	    fetch_sub_release(&src->state_, (uint64_t)CANCEL__S_WAITER);
	if (old & CANCEL__S_DWAIT)
		cancel__unpark_all(cancel__state_word(src));
}

bool
cancel__cancel_cause(struct cancel_source *src, int reason, const char *msg)
{
	if (src == NULL)
		return false;
	if (reason <= 0)
		reason = ECANCELED;
	CANCEL_ERRNO_SAVE();
	bool won = cancel__begin(src, reason, false, msg, NULL);
	if (won)
		cancel__finish(src);
	CANCEL_ERRNO_RESTORE();
	return won;
}

bool
cancel_source_cancel_with(struct cancel_source *src, int reason)
{
	return cancel__cancel_cause(src, reason, NULL);
}

bool
cancel_source_cancel_with_cause(struct cancel_source *src, int reason,
                                const char *msg)
{
	return cancel__cancel_cause(src, reason, msg);
}

bool
cancel_source_cancel(struct cancel_source *src)
{
	return cancel__cancel_cause(src, ECANCELED, NULL);
}

/* ------------------------------------------------------------------ */
/* destroy                                                            */
/* ------------------------------------------------------------------ */

static bool
pred_done(uint64_t s)
{
	return (s & CANCEL__S_DONE) != 0;
}

static bool
pred_no_waiters(uint64_t s)
{
	return cancel__state_waiters(s) == 0;
}

/*
 * Park on the state word until @pred holds (true); DWAIT asks for a
 * wake-up. With @busy_on_gen_wait (destroy() from a callback of @src's own
 * cancel), give up (false) as soon as an unregister is parked on the
 * callback this thread runs (GEN_WAIT): it leaves only after that callback
 * returns, so waiting for it would deadlock; the caller returns EBUSY. The
 * unregister sets GEN_WAIT before it counts itself and wakes us if DWAIT
 * is set (callback.c), so one of us sees the other.
 */
static bool
wait_state(struct cancel_source *src, bool (*pred)(uint64_t),
           bool busy_on_gen_wait)
{
	for (;;) {
		/* Acquire pairs with run_list's DONE release, with
		 * cancel__waiter_leave's release and with the parked
		 * unregister's acq_rel count. */
		uint64_t s = ld_acquire(&src->state_);
		if (busy_on_gen_wait && (ld_relaxed(&src->gen_) & GEN_WAIT)) {
			fetch_and_acq_rel(&src->state_,
			                  ~(uint64_t)CANCEL__S_DWAIT);
			return false;
		}
		if (pred(s))
			return true;
		if (!(s & CANCEL__S_DWAIT)) {
			fetch_or_acq_rel(&src->state_, CANCEL__S_DWAIT);
			continue;
		}
		cancel__park(cancel__state_word(src), (uint32_t)s,
		             CANCEL_NEVER);
	}
}

static bool
busy_locked(struct cancel_source *src)
{
	uint64_t s = ld_relaxed(&src->state_);
	/* Acquire pairs with the release decrement in a child's destroy. */
	/* GEN_WAIT: an unregister is parked on a running callback. */
	return src->head_ != NULL || ld_acquire(&src->children_) != 0 ||
	       cancel__state_waiters(s) != 0 ||
	       (ld_relaxed(&src->gen_) & GEN_WAIT) != 0;
}

static int
teardown(struct cancel_source *src, struct cancel__frame *frame,
         bool queued)
{
	core_lock(src);
	if (busy_locked(src)) {
		fetch_and_acq_rel(&src->state_, ~(uint64_t)CANCEL__S_DWAIT);
		core_unlock(src);
		return EBUSY;
	}
	if (frame != NULL) {
		/* Destroyed from inside the callback now running: the run
		 * loop will not finish it, so complete it here (unless it
		 * released itself, and may be gone): it forgets src. */
		struct cancel_callback *cur = src->current_;
		if (cur != NULL && !frame->cb_released) {
			uint32_t st = ld_relaxed(&cur->state_);
			st_relaxed(&cur->state_,
			           (st & ~CB_STATE_MASK) | CB_DONE);
			if (!(st & CB_KEEP_SRC)) {
				/* Still running for other threads until fn
				 * returns: they find it on the released list
				 * (run_list takes it off), not through the
				 * source, which is about to go. */
				frame->cb_released = true;
				cancel__released_add(frame, cur);
				/* Release: as in run_list, for the owner. */
				st_release(&cur->src_, NULL);
			}
		}
		frame->src_destroyed = true;
	}
	core_unlock(src);
	if (queued)
		dequeue(src);
	cancel__unlink_parents(src);
	/*
	 * A parent canceling on another thread may have reached our link
	 * while we unlinked: the unregister waited for the link to return,
	 * but a deep propagation only queued our finish on that thread. Wait
	 * for it (it runs no callback: we have none) before the memory goes.
	 */
	if (frame == NULL) {
		uint64_t s = ld_acquire(&src->state_);
		if ((s & CANCEL__S_CANCELED) && !(s & CANCEL__S_DONE)) {
			void *r = ld_relaxed(&src->runner_);
			if (r == (void *)&cancel__tls.queued)
				dequeue(src);
			else if (!cancel__frame_is_mine(r))
				wait_state(src, pred_done, false);
		}
	}
	/* Disarm before closing the fd: a firing timer may still write it. */
	cancel__timer_disarm(src);
	cancel__source_fd_close(src);
	return 0;
}

/*
 * Nothing on @src to wait for or take apart but its timer and its parent
 * links: not canceled (no waiter, no fd: those live in the state word),
 * no callback registered, no child (a linked child or a watch). Read
 * without the lock, as destroy may: no other call races it (SPEC).
 */
static inline bool
quiet(struct cancel_source *src)
{
	/* Acquire pairs with cancel__begin's CAS. */
	return ld_acquire(&src->state_) == 0 &&
	       ld_relaxed(&src->head_) == NULL &&
	       ld_acquire(&src->children_) == 0;
}

static __attribute__((noinline)) int
destroy_slow(struct cancel_source *src)
{
	if (src == NULL)
		return EINVAL;
	/* As the fast path, with a timer armed (a request's deadline) and no
	 * parent. The disarm waits for a firing in progress; if one canceled
	 * us meanwhile, the rest below does the work. */
	if (quiet(src) && src->nlinks_ == 0) {
		CANCEL_ERRNO_SAVE();
		cancel__timer_disarm(src);
		CANCEL_ERRNO_RESTORE();
		/* Acquire pairs with cancel__begin's CAS. */
		if (ld_acquire(&src->state_) == 0) {
			if (__builtin_expect(cancel__debug_leaks, 0))
				return cancel__debug_destroyed(src);
			return 0;
		}
	}
	/* Acquire pairs with cancel__begin's CAS and run_list's DONE. */
	uint64_t s = ld_acquire(&src->state_);
	CANCEL_ERRNO_SAVE();
	int rc;
	struct cancel__frame *mine = NULL;
	bool queued = false;

	if ((s & CANCEL__S_CANCELED) && !(s & CANCEL__S_DONE)) {
		void *r = ld_relaxed(&src->runner_);
		if (cancel__frame_is_mine(r)) {
			/* Our own cancel is running src's callbacks (or has
			 * queued them): never wait for ourselves. */
			if (r == (void *)&cancel__tls.queued)
				queued = true;
			else
				mine = r;
		} else {
			if ((s & CANCEL__S_SIGNAL) && r == NULL) {
				if (cancel__lt_is_self()) {
					/* Queued behind us on the library
					 * thread: cannot wait for ourselves. */
					rc = EBUSY;
					goto out;
				}
				if (cancel__lt_ensure() != 0) {
					rc = EAGAIN;
					goto out;
				}
			}
			wait_state(src, pred_done, false);
		}
	}
	if (ld_acquire(&src->state_) & CANCEL__S_CANCELED) {
		if (!wait_state(src, pred_no_waiters, mine != NULL)) {
			rc = EBUSY;
			goto out;
		}
	}
	rc = teardown(src, mine, queued);
	if (__builtin_expect(cancel__debug_leaks, 0) && rc == 0)
		cancel__debug_destroyed(src);
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/*
 * For @src's fast destroy: take its one embedded link out of the parent's
 * list without waiting. The parent's lock decides: a link still registered
 * is removed before the parent's cancel can pop it. False if that needs the
 * general path (parent's lock busy; link already popped by a cancel, which
 * destroy_slow waits for; several parents).
 */
static inline bool
unlink_one_fast(struct cancel_source *src)
{
	if (src->nlinks_ != 1 || src->links_ != NULL)
		return false;
	struct cancel_callback *link = &src->link_;
	struct cancel_source *p = ld_relaxed(&link->src_);
	if (p == NULL || !core_unregister_fast(p, link))
		return false;
	st_relaxed(&link->src_, NULL);
	src->nlinks_ = 0;
	return true;
}

/*
 * The fast path: never canceled, no waiter, no fd (state word 0), nothing
 * registered, no child, never armed, at most one parent whose link comes
 * out at once: nothing to wait for or to free. No cancel runs src's list,
 * and registers, waits and new children may not race destroy, so head_
 * and children_ cannot change under us (the caller ordered their last
 * change before this call; the acquire loads pair with the release that
 * published it). No call, no saved register, errno untouched. Anything
 * else goes to destroy_slow, whose teardown checks the same under the
 * lock.
 */
int
cancel_source_destroy(struct cancel_source *src)
{
	if (src != NULL && quiet(src) &&
	    /* Acquire pairs with the timer's release stores of tflags_
	     * (all zero: never armed, nothing for the disarm to do). */
	    ld_acquire(&src->tflags_) == 0 &&
	    (src->nlinks_ == 0 || unlink_one_fast(src)) &&
	    /* Reloaded after the unlink, as teardown does. */
	    ld_acquire(&src->state_) == 0) {
		if (__builtin_expect(cancel__debug_leaks, 0))
			return cancel__debug_destroyed(src);
		return 0;
	}
	return destroy_slow(src);
}

/* ------------------------------------------------------------------ */
/* Token queries                                                      */
/* ------------------------------------------------------------------ */

bool
cancel_token_can_be_canceled(cancel_token tok)
{
	return tok.src_ != NULL;
}

int
cancel_token_reason(cancel_token tok)
{
	if (tok.src_ == NULL)
		return 0;
	/* Acquire pairs with cancel__begin's release CAS. */
	uint64_t s = ld_acquire(&tok.src_->state_);
	return (s & CANCEL__S_CANCELED) ? cancel__state_reason(s) : 0;
}

bool
cancel_token_cause(cancel_token tok, struct cancel_cause *cause)
{
	if (tok.src_ == NULL || cause == NULL)
		return false;
	/* Acquire pairs with cancel__begin's release CAS: the reason. */
	uint64_t s = ld_acquire(&tok.src_->state_);
	if (!(s & CANCEL__S_CANCELED))
		return false;
	CANCEL_ERRNO_SAVE();
	struct cancel__cause c;
	cancel__cause_get(tok.src_, &c);
	cause->reason = cancel__state_reason(s);
	cause->msg = c.msg;
	cause->origin = c.origin;
	cause->when = cancel__ns_to_ts(c.when);
	CANCEL_ERRNO_RESTORE();
	return true;
}

int
cancel_token_check(cancel_token tok)
{
	return cancel_token_is_canceled(tok) ? ECANCELED : 0;
}
