/*
 * watch.pml: a hang-up watch (src/watch.c, watch_epoll.c) racing its stop.
 *
 * The kernel object: a registration (reg) that a hang-up makes ready;
 * EPOLLONESHOT reports it once. epoll_ctl DEL removes the registration
 * and any ready event with it.
 *
 *   loop (library thread): under the watch lock, epoll_wait(0) takes the
 *       ready event and moves the watch it names from ACTIVE to PENDING
 *       (reading the watch); then, still under the lock, pops a PENDING
 *       watch: FIRED, firing = w, unlock; dispatching = w; cancels the
 *       source (its callbacks run; they use the request's state, which
 *       the owner frees after stop); dispatching = none; lock; firing =
 *       none (broadcast); unlock. It never reads the watch after the
 *       cancel.
 *   stop (the owner): under the lock: if not IDLE: DEL; PENDING -> taken
 *       off the pending list; while firing == w and the caller is not
 *       that cancel (dispatching): wait. IDLE; unlock; drop the hold on
 *       the source. The owner then frees the watch and the request's
 *       state, and destroys the source (which waits for a cancel still
 *       running on it: the lifetime mechanism, modelled as a wait for the
 *       end of the cancel).
 *   -DSELF: the owner stops the watch from the cancel's own callback, on
 *       the loop thread (stop returns at once), and frees the watch and
 *       the state there.
 *
 * Checked: nothing reads the watch after it was freed; the callbacks never
 * run on freed request state; the source is not touched after it was
 * freed; a watch w_stopped while ACTIVE or PENDING never cancels (stop said
 * "removed"); no deadlock.
 *
 * Broken variants:
 *   BROKEN_UNLOCKED_COLLECT: epoll_wait runs outside the lock (a blocking
 *     epoll_wait would): the event names a watch that a stop removed and
 *     its owner freed before the loop took the lock.
 *   BROKEN_NO_FIRING_WAIT: stop does not wait for the cancel it started:
 *     the owner frees the request state while its callbacks run.
 */

#define IDLE 0
#define ACTIVE 1
#define PENDING 2
#define FIRED 3

bit lk;
bit reg = 1;      /* registered in the epoll set */
bit ready;        /* a hang-up event waits in the kernel */
byte state = ACTIVE;
bit firing;       /* the loop runs this watch's cancel */
bit dispatching;  /* ... and the loop thread is inside it */
bit held = 1;     /* the watch holds its source */
bit canceled;
bit in_cancel;
bit w_freed;
bit res_freed;    /* the request's state, used by the callbacks */
bit src_freed;
bit removed;      /* stop's result */
bit w_stopped;

inline lock()
{
	atomic { lk == 0 -> lk = 1 }
}

inline unlock()
{
	lk = 0
}

/* stop(w); self: called from the cancel's callback on the loop */
inline stop(self)
{
	lock();
	assert(!w_freed);
	if
	:: state != IDLE ->
		reg = 0;
		ready = 0; /* DEL takes a ready event with it */
		removed = (state == ACTIVE || state == PENDING);
#ifndef BROKEN_NO_FIRING_WAIT
		do
		:: firing && !self ->
			unlock();
			firing == 0;
			lock()
		:: else -> break
		od;
#endif
		state = IDLE;
		unlock();
		assert(!src_freed);
		held = 0 /* the hold's last touch of the source */
	:: else ->
		unlock()
	fi;
	w_stopped = 1
}

active proctype peer()
{
	/* the client hangs up, at any moment while registered (or never) */
end:
	atomic { reg -> ready = 1 }
}

active proctype loop()
{
	bit got;
end:
	do
	::
#ifdef BROKEN_UNLOCKED_COLLECT
		atomic { reg && ready -> ready = 0; got = 1 };
		lock();
#else
		lock();
		if
		:: reg && ready -> ready = 0; got = 1
		:: else -> got = 0
		fi;
#endif
		if
		:: got ->
			assert(!w_freed); /* the event's watch */
			if
			:: state == ACTIVE -> state = PENDING
			:: else
			fi
		:: else
		fi;
		got = 0;
		if
		:: state == PENDING ->
			assert(!w_freed);
			state = FIRED;
			firing = 1;
			unlock();
			dispatching = 1;
			/* the source's cancel and its callbacks */
			assert(!src_freed);
			canceled = 1;
			in_cancel = 1;
			assert(!res_freed);
#ifdef SELF
			stop(1);
			w_freed = 1;
			res_freed = 1;
#endif
			in_cancel = 0;
			dispatching = 0;
			lock();
			firing = 0;
			unlock()
		:: else ->
			unlock()
		fi
	od
}

active proctype owner()
{
#ifndef SELF
	stop(0);
	w_freed = 1;
	res_freed = 1;
	/* a watch w_stopped before it fired never cancels */
	assert(!removed || !canceled);
#else
	/* wait for the callback to stop the watch */
	w_stopped == 1;
#endif
	/* destroy: EBUSY while held; waits for a running cancel */
	assert(!held);
	in_cancel == 0;
	src_freed = 1
}
