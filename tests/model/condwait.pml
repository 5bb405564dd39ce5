/*
 * condwait.pml: the cancellable condition wait of src/wrap_cond.c
 * (cancel_cond_wait), on pthread mutex + condvar semantics.
 *
 * cond_wait(cv, mu) is one atomic step "release mu and join the wait set",
 * then "be removed from the wait set" (by signal, broadcast or, with
 * -DSPURIOUS, at most once spuriously), then "reacquire mu" (blocking).
 *
 * The waiter (holding mu) registers a cancel callback with try_register
 * (ECANCELED if already canceled: the registration is the check), sleeps,
 * unregisters (may wait for a callback running on another thread), revokes
 * its deferred work item (if the library thread is running it, it drops
 * mu, waits for the item, takes mu back), and returns ECANCELED or 0. On
 * ECANCELED after having slept it passes on a wake-up it may have consumed
 * with one signal.
 *
 * The cancel callback runs on the canceller, which may hold mu itself:
 * trylock(mu): broadcast and unlock; if busy, broadcast without the lock
 * AND post the work item. The library thread takes the item, lock(mu)
 * (blocking), broadcast, unlock, marks it done.
 *
 * The callback list itself is abstracted (callback.pml checks it): a
 * callback is REGISTERED, RUNNING, DONE or REMOVED, and unregister waits
 * while it is RUNNING.
 *
 * Options (spin -D...):
 *   TWO        two cancellable waiters on the same token, cv and mu
 *   PRODUCER   a producer adds one item and signals; a plain (not
 *              cancellable) consumer waits for items too: a wake-up taken
 *              by a canceled waiter must reach the consumer
 *   SPURIOUS   each cond_wait may return spuriously once
 *   LIVE       for the non-progress check (pan -DNP, ./pan -l -f): an idle
 *              process loops forever and makes progress only once every
 *              waiter has returned
 *   LTCANCEL   no canceller thread: the library thread cancels (a deadline
 *              set with cancel_after fires), so the callback posts its
 *              work item to the thread that runs it
 *   TIMER      the library thread also serves a timer; a thread holding mu
 *              waits for it (documents the limitation in README.md)
 * Broken variants define BROKEN_BARE_BROADCAST, BROKEN_BLOCKING_LOCK or
 * BROKEN_NO_PASSON.
 */

#define NOBODY 255
#define NPID 8

#define ECANCELED 125

/* callback states */
#define C_IDLE 0
#define C_REGISTERED 1
#define C_RUNNING 2
#define C_DONE 3
#define C_REMOVED 4

/* work item states */
#define W_IDLE 0
#define W_QUEUED 1
#define W_RUNNING 2
#define W_DONE 3

#ifdef TWO
#define NW 2
#define NONE_REGISTERED \
	(cbs[0] != C_REGISTERED && cbs[1] != C_REGISTERED)
#else
#define NW 1
#define NONE_REGISTERED (cbs[0] != C_REGISTERED)
#endif
#ifdef TWO
#define ALL_DONE (wdone[0] && wdone[1])
#else
#define ALL_DONE (wdone[0])
#endif

byte mu = NOBODY;		/* owner pid */
bool inwait[NPID];		/* the condvar's wait set, by pid */
bool canceled;
byte cbs[NW];			/* each waiter's cancel callback */
byte work[NW];			/* each waiter's deferred work item */
byte items;			/* the predicate (PRODUCER) */
byte nret[NW];			/* cancel_cond_wait returns (observer) */
bool wdone[NW];			/* the waiter left its loop (observer) */
bool timer_fired;		/* TIMER */
bool timer_armed;		/* TIMER */

inline mu_lock()
{
	atomic { mu == NOBODY -> mu = _pid }
}

inline mu_unlock()
{
	assert(mu == _pid);
	mu = NOBODY
}

inline cv_broadcast()
{
	d_step {
		inwait[0] = false;
		inwait[1] = false;
		inwait[2] = false;
		inwait[3] = false;
		inwait[4] = false;
		inwait[5] = false;
		inwait[6] = false;
		inwait[7] = false
	}
}

/* wakes one thread of the wait set, if any */
inline cv_signal()
{
	atomic {
		if
		:: inwait[1] -> inwait[1] = false
		:: inwait[2] -> inwait[2] = false
		:: inwait[3] -> inwait[3] = false
		:: inwait[4] -> inwait[4] = false
		:: inwait[5] -> inwait[5] = false
		:: inwait[6] -> inwait[6] = false
		:: inwait[7] -> inwait[7] = false
		:: else
		fi
	}
}

/* pthread_cond_wait(cv, mu); sp counts the spurious wake-ups left */
inline cond_wait(sp)
{
	atomic {
		assert(mu == _pid);
		mu = NOBODY;
		inwait[_pid] = true
	};
	if
	:: !inwait[_pid]
#ifdef SPURIOUS
	:: atomic { sp > 0 && inwait[_pid] -> inwait[_pid] = false; sp-- }
#endif
	fi;
	mu_lock()
}

/* the cancel callback of waiter w, run on the canceller's thread */
inline cancel_fn(w, ok)
{
#if defined(BROKEN_BLOCKING_LOCK)
	mu_lock();
	cv_broadcast();
	mu_unlock()
#elif defined(BROKEN_BARE_BROADCAST)
	cv_broadcast()
#else
	atomic {
		if
		:: mu == NOBODY -> mu = _pid; ok = true
		:: else -> ok = false
		fi
	};
	if
	:: ok ->
		cv_broadcast();
		mu_unlock()
	:: else ->
		cv_broadcast();
		d_step {
			assert(work[w] == W_IDLE);
			work[w] = W_QUEUED
		}
	fi;
	ok = false
#endif
}

/* cancel_cond_wait(cv, mu, NULL, tok) for waiter w */
inline cancel_cond_wait(w, rc, sp)
{
	assert(mu == _pid);
	atomic {		/* try_register */
		if
		:: canceled -> rc = ECANCELED
		:: else -> cbs[w] = C_REGISTERED; rc = 0
		fi
	};
	if
	:: rc == 0 ->
		cond_wait(sp);
		/* unregister: waits while the callback runs elsewhere */
		atomic {
			if
			:: cbs[w] == C_REGISTERED -> cbs[w] = C_REMOVED
			:: else
			fi
		};
		(cbs[w] != C_RUNNING);
		cbs[w] = C_IDLE;
		/* revoke the work item */
		atomic {
			if
			:: work[w] == W_RUNNING -> rc = 1
			:: else -> work[w] = W_IDLE
			fi
		};
		if
		:: rc == 1 ->
			mu_unlock();
			(work[w] == W_DONE);
			mu_lock();
			work[w] = W_IDLE;
			rc = 0
		:: else
		fi;
		if
		:: canceled ->
			rc = ECANCELED;
#ifndef BROKEN_NO_PASSON
			cv_signal()	/* pass on a wake-up we may have taken */
#endif
		:: else
		fi
	:: else
	fi;
	/* every return: mu held, the work item no longer referenced */
	assert(mu == _pid);
	assert(work[w] == W_IDLE);
	nret[w]++
}

proctype Waiter(byte w)
{
	byte rc;
	byte sp = 1;

	mu_lock();
	do
	:: items > 0 ->
		items--;
		break
	:: else ->
		cancel_cond_wait(w, rc, sp);
		if
		:: rc == ECANCELED -> break
		:: else
		fi
	od;
	mu_unlock();
	wdone[w] = true
}

/* cancel: set CANCELED, then run the registered callbacks one at a time */
inline do_cancel(c, ok)
{
	atomic {
		if
		:: canceled -> assert(false)	/* only one canceller */
		:: else -> canceled = true
		fi
	};
	do
	:: atomic { cbs[0] == C_REGISTERED -> cbs[0] = C_RUNNING; c = 0 };
		cancel_fn(c, ok);
		cbs[c] = C_DONE
#ifdef TWO
	:: atomic { cbs[1] == C_REGISTERED -> cbs[1] = C_RUNNING; c = 1 };
		cancel_fn(c, ok);
		cbs[c] = C_DONE
#endif
	:: NONE_REGISTERED -> break
	od;
	c = 0
}

proctype Canceller()
{
	bool hold;
	bool ok;
	byte c;

	if
	:: hold = true
	:: hold = false
	fi;
	if
	:: hold -> mu_lock()
	:: else
	fi;
	do_cancel(c, ok);
#ifdef TIMER
	/* while still holding mu, wait for a timer the library thread fires */
	if
	:: hold ->
		timer_armed = true;
		timer_fired
	:: else
	fi;
#endif
	if
	:: hold -> mu_unlock()
	:: else
	fi
}

proctype Library()
{
	byte c;
#ifdef LTCANCEL
	bool ok;
#endif

end_idle:
	do
#ifdef LTCANCEL
	/* a deadline (cancel_after) fires: cancel on the library thread */
	:: !canceled -> do_cancel(c, ok)
#endif
	:: atomic { work[0] == W_QUEUED -> work[0] = W_RUNNING; c = 0 };
		mu_lock();
		cv_broadcast();
		mu_unlock();
		work[c] = W_DONE
#ifdef TWO
	:: atomic { work[1] == W_QUEUED -> work[1] = W_RUNNING; c = 1 };
		mu_lock();
		cv_broadcast();
		mu_unlock();
		work[c] = W_DONE
#endif
#ifdef TIMER
	:: atomic { timer_armed && !timer_fired -> timer_fired = true }
#endif
	od
}

#ifdef PRODUCER
proctype Producer()
{
	mu_lock();
	items++;
	cv_signal();
	mu_unlock()
}

/* a plain pthread consumer: may wait forever once the item is gone */
proctype Consumer()
{
	mu_lock();
	do
	:: items > 0 ->
		items--;
		break
	:: else ->
		atomic {
			mu = NOBODY;
			inwait[_pid] = true
		};
end_sleep:
		!inwait[_pid];
		mu_lock()
	od;
	mu_unlock()
}
#endif

#ifdef LIVE
/*
 * Runs forever, so that a waiter blocked for good shows up as a cycle
 * without progress; it passes its progress label only once every waiter
 * has returned (weak fairness makes the waiters run while they can).
 */
proctype Idle()
{
	bool t;

end_idle:
	do
	:: !ALL_DONE ->
		t = true;
		t = false
	:: ALL_DONE -> break
	od;
end_done:
	do
	:: t = true;
progress_done:
		t = false
	od
}
#endif

/* at quiescence: nobody sleeps while there is an item to take */
proctype Monitor()
{
end_wait:
	timeout ->
	assert(!(items > 0 && (inwait[1] || inwait[2] || inwait[3] ||
	    inwait[4] || inwait[5] || inwait[6] || inwait[7])));
	assert(wdone[0]);
#ifdef TWO
	assert(wdone[1]);
#endif
}

init {
	atomic {
		run Waiter(0);
#ifdef TWO
		run Waiter(1);
#endif
#ifndef LTCANCEL
		run Canceller();
#endif
		run Library();
#ifdef PRODUCER
		run Producer();
		run Consumer();
#endif
#ifdef LIVE
		run Idle();
#else
		run Monitor();
#endif
	}
}
