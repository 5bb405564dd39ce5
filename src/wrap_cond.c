/*
 * cancel_cond_wait: pthread_cond_wait that cancel (or a deadline) ends.
 *
 * Protocol. The waiter W holds mu from entry to exit except while it is
 * inside pthread_cond_*wait. Holding mu, W registers a callback H on the
 * token (try_register: ECANCELED if already canceled, nothing blocked),
 * then waits on cv, then unregisters H and revokes H's work item. H runs
 * on the canceling thread (or the library thread for a timer or signal
 * cancel) and never blocks on mu:
 *   - if pthread_mutex_trylock(mu) succeeds: broadcast cv, unlock;
 *   - else: broadcast cv, then post a work item whose fn, on the library
 *     thread, does lock(mu), broadcast(cv), unlock(mu).
 *
 * No lost wake-up. H runs only after W's registration, which W made while
 * holding mu, and W releases mu only by entering the wait (atomically with
 * joining cv's waiters, as POSIX guarantees to any thread that then takes
 * mu and broadcasts), or by returning after unregistering H, which waits
 * for a running H and stops a later one. So whenever some thread (H or the
 * work item) acquires mu while H's wake-up is still due, W is inside the
 * wait: either blocked on cv, and a broadcast that thread makes afterwards
 * wakes it (POSIX: a broadcast by a thread that acquired mu after W
 * released it in the wait behaves as if W had blocked; it need not hold mu
 * while broadcasting), or already woken, which is a wake-up too. Case 1:
 * H's trylock succeeds: H unlocks, then broadcasts, so the woken W does not
 * find mu still held by H and block on it a second time. Case 2: it fails (W
 * itself holds mu between registration and the wait, or the caller of
 * cancel, or any other thread holds it): the work item takes mu once it is
 * free and broadcasts under it; the unlocked broadcast H made first only
 * saves a trip through the library thread when W is already blocked.
 * The work item may run after W woke for another reason: W then revokes
 * it; if it is already running it is blocked on mu, which W holds, so W
 * drops mu, waits for it (cancel__work_wait) and takes mu back. H itself
 * may run while W is in cancel_callback_unregister holding mu: unregister
 * waits for H, and H does not wait for mu, so there is no deadlock.
 *
 * Consumed signals. If W's wait returned 0 and W then reports ECANCELED
 * (or, with the timer fallback, ETIMEDOUT), the wake-up may have been a
 * pthread_cond_signal meant for some waiter; W passes it on with one
 * pthread_cond_signal, as the SPEC asks.
 *
 * Deadline. With pthread_cond_clockwait (glibc 2.30 and later) the wait
 * itself takes a CLOCK_MONOTONIC deadline whatever cv's clock is. Without
 * it, the deadline becomes a private source armed with cancel__timer_arm,
 * hooked exactly like the token; ETIMEDOUT when that one fired and the
 * token did not.
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>

#if !defined(CANCEL_COND_NO_CLOCKWAIT) && defined(__GLIBC__) &&             \
	defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 30)
#define HAVE_CLOCKWAIT 1
#endif
#endif
#ifndef HAVE_CLOCKWAIT
#define HAVE_CLOCKWAIT 0
#endif

struct cond_wait;

/* One wake-up path into the wait: the token's, or the fallback timer's. */
struct hook {
	struct cancel_callback cb;
	struct cancel__work work;
	struct cond_wait *w;
};

/* Lives in the waiter's stack frame until cancel_cond_wait returns. */
struct cond_wait {
	pthread_cond_t *cv;
	pthread_mutex_t *mu;
	struct hook tok;
#if !HAVE_CLOCKWAIT
	struct hook timer;
	struct cancel_source timer_src;
#endif
};

/* The library thread's half: runs once mu is free. */
static void
work_fn(struct cancel__work *work)
{
	struct hook *h =
	        (struct hook *)(void *)((char *)work -
	                                offsetof(struct hook, work));
	struct cond_wait *w = h->w;
	pthread_mutex_lock(w->mu);
	pthread_cond_broadcast(w->cv);
	pthread_mutex_unlock(w->mu);
}

/* The cancel callback: never blocks on mu (see the top of this file). */
static void
on_cancel(void *arg)
{
	struct hook *h = arg;
	struct cond_wait *w = h->w;
	if (pthread_mutex_trylock(w->mu) == 0) {
		/* W is inside the wait (see the top): unlock first, so that
		 * W, once woken, takes mu without blocking on us. */
		pthread_mutex_unlock(w->mu);
		pthread_cond_broadcast(w->cv);
		return;
	}
	pthread_cond_broadcast(w->cv);
	/* The waiter made sure the library thread runs (cancel__lt_ensure),
	 * so this does not fail short of a fork that lost the thread. */
	cancel__work_post(&h->work);
}

/* 0 or ECANCELED (nothing registered). */
static int
hook_arm(struct hook *h, struct cond_wait *w, cancel_token tok)
{
	*h = (struct hook){.w = w};
	h->work.fn = work_fn;
	return cancel_callback_try_register(&h->cb, on_cancel, h, tok);
}

/* After this, neither the callback nor its work item runs or will run.
 * Called with mu held; returns with mu held. */
static void
hook_disarm(struct hook *h, pthread_mutex_t *mu)
{
	/* If H is still returning from its broadcast this parks until H is
	 * done. (Polling try_unregister with pause loops first was slower
	 * in bench_wake on this VM: 20-45 us medians instead of 11-15.) */
	cancel_callback_unregister(&h->cb);
	if (!cancel__work_revoke(&h->work)) {
		/* Running now, blocked on mu, which we hold. */
		pthread_mutex_unlock(mu);
		cancel__work_wait(&h->work);
		pthread_mutex_lock(mu);
	}
}

/* Decide the result once every hook is disarmed. */
static int
outcome(int r, bool canceled, bool timed_out, pthread_cond_t *cv)
{
	if (canceled || (timed_out && r != ETIMEDOUT)) {
		if (r == 0)
			pthread_cond_signal(cv); /* pass a taken wake-up on */
		return canceled ? ECANCELED : ETIMEDOUT;
	}
	return r; /* 0, ETIMEDOUT, or the condvar's own error */
}

/*
 * The two bodies have distinct names: the coverage build compiles this
 * file both ways (test_cond_noclockwait), and gcovr merges the two only
 * when no function name sits at two different lines.
 */
#if HAVE_CLOCKWAIT
static int
wait_clockwait(struct cond_wait *w, uint64_t dl, cancel_token tok)
{
	bool hooked = false;
	if (tok.src_ != NULL) {
		if (cancel__lt_ensure() != 0)
			return EAGAIN;
		int rc = hook_arm(&w->tok, w, tok);
		if (rc != 0)
			return rc;
		hooked = true;
	}
	int r;
	if (dl == CANCEL_NEVER) {
		r = pthread_cond_wait(w->cv, w->mu);
	} else {
		struct timespec ts = cancel__ns_to_ts(dl);
		r = pthread_cond_clockwait(w->cv, w->mu, CLOCK_MONOTONIC, &ts);
	}
	if (hooked)
		hook_disarm(&w->tok, w->mu);
	return outcome(r, cancel_token_is_canceled(tok), false, w->cv);
}
#else
static int
wait_timer(struct cond_wait *w, uint64_t dl, cancel_token tok)
{
	bool timer = dl != CANCEL_NEVER;
	bool tok_hooked = false;
	bool timer_hooked = false;
	bool fired = false;
	int rc = 0;
	int r = 0;
	if ((tok.src_ != NULL || timer) && cancel__lt_ensure() != 0)
		return EAGAIN;
	if (timer) {
		cancel_source_init(&w->timer_src);
		if (cancel__timer_arm(&w->timer_src, dl) != 0) {
			/* Never armed, nothing registered: cannot be busy. */
			int drc = cancel_source_destroy(&w->timer_src);
			(void)drc;
			return EAGAIN;
		}
		rc = hook_arm(&w->timer, w,
		              cancel_source_token(&w->timer_src));
		if (rc != 0) {
			fired = true; /* already at the deadline */
			rc = 0;
			goto done;
		}
		timer_hooked = true;
	}
	if (tok.src_ != NULL) {
		rc = hook_arm(&w->tok, w, tok);
		if (rc != 0)
			goto done;
		tok_hooked = true;
	}
	r = pthread_cond_wait(w->cv, w->mu);
	rc = -1;
done:
	if (tok_hooked)
		hook_disarm(&w->tok, w->mu);
	if (timer_hooked)
		hook_disarm(&w->timer, w->mu);
	if (timer) {
		cancel__timer_disarm(&w->timer_src);
		fired = fired || cancel_token_is_canceled(
		                         cancel_source_token(&w->timer_src));
		/* Hooks disarmed, timer disarmed: 0. */
		int drc = cancel_source_destroy(&w->timer_src);
		(void)drc;
	}
	if (rc != -1) /* never waited */
		return cancel_token_is_canceled(tok) ? ECANCELED
		       : rc != 0                    ? rc
		                                    : ETIMEDOUT;
	return outcome(r, cancel_token_is_canceled(tok), fired, w->cv);
}
#endif

int
cancel_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu,
                 const struct timespec *deadline, cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	uint64_t dl;
	int rc = EINVAL;
	if (cv == NULL || mu == NULL ||
	    cancel__deadline_ns(deadline, &dl) != 0)
		goto out;
	rc = ECANCELED;
	if (cancel_token_is_canceled(tok))
		goto out;
	rc = ETIMEDOUT;
	if (dl != CANCEL_NEVER && cancel__now_ns() >= dl)
		goto out; /* check once, do not block */
	/* Not a cancellation point while library state (the callback, the
	 * work item) lives in this frame. */
	int cstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cstate);
	struct cond_wait w = {.cv = cv, .mu = mu};
	/*
	 * A user of the token's source (source.c) until the result is
	 * decided: the woken wait re-acquires mu, disarms the hook (which may
	 * park on the source) and reads the token last. A destroy on another
	 * thread waits for that, so do not destroy a canceled source while
	 * holding the mutex of a cond wait on it.
	 */
	if (tok.src_ != NULL)
		cancel__waiter_enter(tok.src_);
#if HAVE_CLOCKWAIT
	rc = wait_clockwait(&w, dl, tok);
#else
	rc = wait_timer(&w, dl, tok);
#endif
	if (tok.src_ != NULL)
		cancel__waiter_leave(tok.src_); /* last access */
	pthread_setcancelstate(cstate, NULL);
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}
