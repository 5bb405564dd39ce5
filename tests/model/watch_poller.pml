/*
 * watch_poller.pml: a waiter that polls a watched descriptor itself
 * (src/watch.c cancel__watch_wait, fire_here, cancel_watch_stop,
 * cancel__watch_dispatch; the caller is wait_source in src/wrap_sleep.c),
 * racing the watch's stop, the library thread and a hang-up.
 *
 * One watch w on descriptor number fd, which names connection 1. The
 * kernel object (the epoll set) holds at most one registration per
 * number; reg says whose it is (none, w, or -DSECOND's w2). A hang-up
 * makes it ready; EPOLLONESHOT reports it once; a DEL removes whatever
 * registration the number has, and any ready event with it; an ADD while
 * the peer has already hung up is ready at once. Two locks: the watch
 * lock (lk, which also guards the pollers list and the cond var
 * watch_cv) and the source's core lock (clk, where register checks
 * CANCELED). cond_wait is "release lk and join the wait set" in one
 * step, leave it on a broadcast, relock. `act`: w is in the table where
 * waiters find ACTIVE watches (left when w leaves ACTIVE).
 *
 *   waiter (a thread in cancel_wait on the source; at most one takeover
 *       per wait): unless canceled, under the watch lock: if w is in the
 *       table, not POLLED and the source's callback list is empty (a
 *       relaxed look): DEL (reg = none, its ready event goes too), POLLED
 *       and WF_OUT (out), its node on the pollers list (evicted clear);
 *       unlock. Else it parks on the source. It then polls the NUMBER fd
 *       (plus its thread's wake descriptor, which a cancel of the source
 *       and an eviction write) and wakes on:
 *       a hang-up of whatever connection fd names at that moment; a
 *       cancel of the source; its node evicted; the deadline (-DDEADLINE).
 *       Then, under the watch lock:
 *         evicted: touch nothing but the let-go below;
 *         a hang-up: under the core lock: already canceled -> FIRED;
 *           list empty -> cancel the source right there (a finish with
 *           nothing to run), FIRED; a callback registered since the
 *           takeover -> PENDING on the pending list, and a kick of the
 *           loop after the unlock (the loop fires it, so callbacks run
 *           there);
 *         anything else (a cancel, the deadline): if w is still ACTIVE,
 *           ADD it back (ready at once if the peer hung up meanwhile) and
 *           clear out. A watch it fired, handed to the loop or was
 *           evicted from keeps out until its stop.
 *       Let go: clear POLLED, take the node off, broadcast if evicted;
 *       unlock; kick if it must. Then park on the source until canceled
 *       (or the deadline); w is not looked at again.
 *   stop (the owner): under the watch lock, st = w's state (read once,
 *       before any wait, as the C code does); if not IDLE:
 *       if POLLED: set the poller node's evicted (and write its wake
 *       descriptor), then cond_wait while POLLED; DEL unless out (a
 *       watch out of the epoll set owns no registration: the number may
 *       be w2's by now); out of the table or off the pending list; while
 *       the loop runs w's cancel (`firing`), cond_wait (the SELF case of a
 *       stop from inside that cancel is watch.pml's). IDLE; unlock. It
 *       returns "stopped before it fired" when st was ACTIVE or PENDING.
 *       The owner then closes fd, frees w, and may reuse the number for
 *       connection 2, whose peer may hang up too.
 *   loop (the library thread): sleeps until the epoll set has a ready
 *       event or a kick; under the watch lock collects (the event's watch,
 *       if ACTIVE, goes PENDING), then pops each PENDING watch: FIRED,
 *       firing, unlock; cancels the source (its callbacks run here); lock,
 *       firing = none, broadcast. It never reads w after the cancel.
 *   peer: connection 1's peer hangs up at any moment, or never.
 *   -DREGISTRAR: a thread registers a callback on the source: under the
 *       core lock, unless CANCELED (refused: what runs then on that thread
 *       is the register's own business, not the watch's).
 *   -DCANCEL: a thread cancels the source (runs its callbacks itself).
 *   -DDEADLINE: the wait has a deadline that may pass while the waiter
 *       polls or parks (it then leaves).
 *   -DSETTLE: the owner stops only once nothing else can move (timeout),
 *       and first checks that a hang-up of connection 1 became a cancel.
 *   -DSHARED_CV: watch_cv is shared by every watch: other watches'
 *       cancels end on the loop and broadcast, at any moment stop waits.
 *   -DTWO: two waiters on the source. stop takes w out of the table in
 *       the same hold of the lock as the eviction, so the second waiter
 *       cannot take it over while stop waits (BROKEN_UNLINK_LATE).
 *   -DSECOND: another request handler watches the same number for its
 *       own source src2 (watch w2; the number names the same socket, so
 *       connection 1's hang-up is w2's too). Under the watch lock, its
 *       register succeeds only if the number is free: not registered, not
 *       polled, not FIRED with out (polled_fds, out_fds: EEXIST as if w
 *       were still registered); then ADD (reg = w2). On EEXIST it unlocks
 *       and tries again, at most NTRY times at any moment, then once
 *       more after w's stop, which must succeed. The loop collects and
 *       fires w2 as it does w (it cancels src2; w2 is never stopped).
 *       The owner does not close fd here (w2 still watches it).
 *
 * Checked: nothing reads w after the owner freed it (waiter, loop, stop);
 * no poll looks at the number fd once the owner closed it (it may name
 * connection 2) and connection 2's hang-up never cancels the source;
 * "stopped before it fired" means the watch never cancels the source, and
 * "fired" means the cancel has happened when stop returns; callbacks never
 * run on the waiter; no deadlock (invalid end state); with SETTLE, a
 * hang-up of connection 1 while w is watched ends in a cancel. A stop's
 * DEL finds w's registration, a resume's ADD finds the number free.
 * With SECOND: once w is stopped the number is free, and once everything
 * has settled, if w2 was registered and the peer hung up, src2 is
 * canceled.
 *
 * Broken variants:
 *   BROKEN_NO_EVICT: stop does not evict or wait for the poller: the
 *     waiter starts its poll after the owner closed (and reused) the
 *     number, or the owner closes it under the poll.
 *   BROKEN_NO_RECHECK: the waiter that saw a hang-up cancels before it
 *     takes the watch lock and looks at evicted: stop was already under
 *     way and says "stopped before it fired", but the source is canceled.
 *   BROKEN_RUN_CALLBACKS (REGISTRAR): the waiter cancels the source even
 *     though a callback was registered since the takeover: the callback
 *     runs on the waiter.
 *   BROKEN_NO_RESUME (SETTLE, DEADLINE): a waiter that lets go without a
 *     hang-up does not put w back in the epoll set: a later hang-up (or
 *     one that came before the takeover, whose event the DEL dropped) is
 *     never seen and the source is never canceled.
 *   BROKEN_UNLINK_LATE (TWO): the first version of the C code, found by
 *     this model: stop evicts only the poller it finds, then waits while
 *     POLLED, and takes w out of the table only afterwards. Waiter A, evicted,
 * lets go and broadcasts; before stop has the lock back, waiter B (a
 * second thread waiting on the source) finds w in the table, not POLLED,
 * and takes it over. B's node is not evicted, so stop sleeps until B's
 * poll ends for another reason, and B, not evicted, lets go without a
 * broadcast: stop sleeps for ever (invalid end state). With SHARED_CV an
 * unrelated broadcast wakes it; by then B may have seen the hang-up and
 * canceled the source, and stop, deciding on the st it read before the
 * wait, says "stopped before it fired" (in the C code it also unlinks w
 * from the table a second time).
 *   BROKEN_STOP_ALWAYS_DEL (SECOND): the version before WF_OUT: stop DELs
 *     the number whatever out says. While it waits for the evicted
 *     waiter with the lock released, w2 is registered (w is out of the
 *     set and no longer polled); the DEL then takes w2's registration,
 *     and connection 1's hang-up never cancels src2.
 */

#ifdef TWO
#define NW 2
#else
#define NW 1
#endif
#define NONE 255
#define NTRY 1 /* SECOND: tries again at any moment after an EEXIST */

/* w's state */
#define IDLE 0
#define ACTIVE 1
#define PENDING 2
#define FIRED 3

/* what the waiter's poll saw */
#define OTHER 0 /* a cancel, an eviction, the deadline */
#define HUP1 1  /* connection 1 hung up */
#define HUP2 2  /* connection 2 hung up (the number was reused) */
#define NVAL 3  /* the number is closed */

/* whose registration the number has in the epoll set */
#define W1 1 /* w */
#define W2 2 /* SECOND's w2 */

/* who runs the callbacks */
#define WAITER 1
#define LOOP 2
#define CANCELLER 3

bit lk;               /* the watch lock */
bit clk;              /* the source's core lock */
bool cvwait;          /* the owner waits on watch_cv */

/* w */
byte state = ACTIVE;
bit act = 1;          /* in the table of ACTIVE watches */
bit polled;           /* POLLED */
bit out;              /* WF_OUT: a waiter took w out of the epoll set */
byte poller = NONE;   /* the waiter whose node names w */
bit evicted[NW];      /* each waiter's node */
bit firing;           /* the loop runs w's cancel */
bit w_freed;

/* the kernel */
byte reg = W1;        /* the number's registration: 0 (none), W1, W2 */
bit ready;            /* ... has an event to report */
bit kick;             /* the loop's wake descriptor */
byte conn = 1;        /* what fd names: 1, 0 (closed), 2 (reused) */
bit hup1;
bit hup2;
bit polling;          /* a waiter is inside poll() on fd */

/* the source */
bit canceled;
bit cbs;              /* its callback list is not empty */

#ifdef SECOND
/* w2, watching the same number for src2 */
byte state2 = IDLE;
bit canceled2;
#endif

/* ghosts */
bit wcanceled;        /* the source was canceled by the watch */
bit removed;          /* stop said "stopped before it fired" */
byte cb_runner;

inline lock()
{
	atomic { lk == 0 -> lk = 1 }
}

inline unlock()
{
	lk = 0
}

inline clock()
{
	atomic { clk == 0 -> clk = 1 }
}

inline cunlock()
{
	clk = 0
}

/* cond_wait(watch_cv, lk) */
inline cond_wait()
{
	atomic { lk = 0; cvwait = 1 };
	!cvwait;
	lock()
}

/* The watch cancels the source (its CAS won): never after "stopped". */
inline watch_cancel()
{
	canceled = 1;
	wcanceled = 1;
	assert(!removed)
}

inline run_callbacks(who)
{
	cb_runner = who;
	assert(cb_runner != WAITER)
}

/* cancel_watch_stop(w), on the owner */
inline stop()
{
	lock();
	assert(!w_freed);
	st = state;
	if
	:: st != IDLE ->
#ifndef BROKEN_UNLINK_LATE
		act = 0;
#endif
#ifndef BROKEN_NO_EVICT
		if
		:: polled ->
			evicted[poller] = 1; /* and its wake descriptor */
			do
			:: polled -> cond_wait()
			:: else -> break
			od
		:: else
		fi;
#endif
#ifdef BROKEN_STOP_ALWAYS_DEL
		reg = 0;    /* DEL, whoever's registration the number has */
		ready = 0;
#else
		if
		:: !out ->  /* still in the epoll set: the registration is w's */
			assert(reg == W1);
			reg = 0;
			ready = 0  /* DEL takes a ready event with it */
		:: else     /* none is w's: the number may be w2's by now */
		fi;
#endif
		act = 0;    /* out of the table or off the pending list */
		do
		:: firing -> cond_wait()
		:: else -> break
		od
	:: else
	fi;
	state = IDLE;
	removed = (st == ACTIVE || st == PENDING);
	unlock()
}

/* Declared first: their _pid are 0 .. NW-1. */
active [NW] proctype waiter()
{
	byte me = _pid;
	byte saw;
	bit late;
	bit ev;
	bit took;
	bit kickme;

	if
	:: canceled -> goto done
	:: else
	fi;

	/* the takeover */
	lock();
	if
	:: act && !polled && !cbs ->
		assert(!w_freed);
		reg = 0;
		ready = 0; /* DEL takes a ready event with it */
		polled = 1;
		out = 1;
		poller = me;
		evicted[me] = 0;
		unlock()
	:: else ->
		unlock();
		goto park
	fi;

	/* poll the number fd */
	atomic { assert(conn == 1); polling = 1 };
	atomic {
		if
		:: conn == 1 && hup1 -> saw = HUP1
		:: conn == 2 && hup2 -> saw = HUP2
		:: conn == 0 -> saw = NVAL
		:: canceled || evicted[me] -> saw = OTHER
#ifdef DEADLINE
		:: !late -> late = 1; saw = OTHER
#endif
		fi;
		polling = 0
	};

#ifdef BROKEN_NO_RECHECK
	if
	:: saw == HUP1 || saw == HUP2 ->
		clock();
		if
		:: !canceled && !cbs -> watch_cancel()
		:: else
		fi;
		cunlock()
	:: else
	fi;
#endif

	lock();
	assert(!w_freed);
	ev = evicted[me];
	if
	:: ev ->
		skip /* a stop took w: let go, nothing else */
	:: !ev && (saw == HUP1 || saw == HUP2) ->
		/* fire_here: a second connection's hang-up never gets here */
		assert(saw == HUP1);
		clock();
		if
		:: canceled ->
			act = 0;
			state = FIRED
		:: !canceled && !cbs ->
			watch_cancel(); /* nothing to run */
			act = 0;
			state = FIRED
		:: !canceled && cbs ->
#ifdef BROKEN_RUN_CALLBACKS
			watch_cancel();
			took = 1;
			cbs = 0;
			act = 0;
			state = FIRED
#else
			act = 0; /* the loop fires it */
			state = PENDING;
			kickme = 1
#endif
		fi;
		cunlock()
	:: !ev && saw == OTHER ->
		if
		:: state == ACTIVE ->
#ifndef BROKEN_NO_RESUME
			assert(reg == 0);
			reg = W1;
			ready = hup1; /* ADD: a hang-up meanwhile is ready */
			out = 0
#else
			skip
#endif
		:: else
		fi
	:: !ev && saw == NVAL ->
		skip
	fi;
	/* let go */
	polled = 0;
	poller = NONE;
	evicted[me] = 0;
	if
	:: ev -> cvwait = 0 /* broadcast */
	:: else
	fi;
	unlock();
	if
	:: took -> run_callbacks(WAITER)
	:: else
	fi;
	if
	:: kickme -> kick = 1
	:: else
	fi;

park:	/* on the source, until canceled (or the deadline) */
end_park:
	if
	:: canceled
#ifdef DEADLINE
	:: skip
#endif
	fi;
done:
	skip
}

active proctype loop()
{
	bit took;
end:
	do
	:: (reg != 0 && ready) || kick ->
		lock();
		kick = 0;
		/* collect, under the lock */
		if
		:: reg == W1 && ready ->
			ready = 0;
			assert(!w_freed); /* the event's watch */
			if
			:: state == ACTIVE ->
				act = 0;
				state = PENDING
			:: else
			fi
#ifdef SECOND
		:: reg == W2 && ready ->
			ready = 0;
			if
			:: state2 == ACTIVE -> state2 = PENDING
			:: else
			fi
#endif
		:: else
		fi;
		/* fire every PENDING watch */
		do
		:: state == PENDING ->
			assert(!w_freed);
			state = FIRED;
			firing = 1;
			unlock();
			clock();
			if
			:: !canceled ->
				watch_cancel();
				took = cbs;
				cbs = 0
			:: else
			fi;
			cunlock();
			if
			:: took -> run_callbacks(LOOP); took = 0
			:: else
			fi;
			lock();
			firing = 0;
			cvwait = 0 /* broadcast */
#ifdef SECOND
		:: state2 == PENDING ->
			state2 = FIRED;
			unlock();
			canceled2 = 1; /* src2: no callbacks, no waiters */
			lock();
			cvwait = 0 /* broadcast */
#endif
		:: else -> break
		od;
		unlock()
	od
}

active proctype peer()
{
	if
	:: atomic {
		hup1 = 1;
		if
		:: reg != 0 -> ready = 1 /* whoever's it is */
		:: else
		fi
	   }
	:: skip
	fi
}

#ifdef REGISTRAR
active proctype registrar()
{
	clock();
	if
	:: !canceled -> cbs = 1
	:: else /* refused */
	fi;
	cunlock()
}
#endif

#ifdef CANCEL
active proctype canceller()
{
	bit took;
	clock();
	if
	:: !canceled ->
		canceled = 1;
		took = cbs;
		cbs = 0
	:: else
	fi;
	cunlock();
	if
	:: took -> run_callbacks(CANCELLER)
	:: else
	fi
}
#endif

#ifdef SECOND
/* another request handler watches the same number (the same socket) for
 * src2: cancel_watch_hangup, EEXIST while the number is not free */
active proctype second()
{
	byte tries;
	lock();
	do
	:: reg == 0 && !polled && !(state == FIRED && out) ->
		reg = W2;
		ready = hup1; /* ADD: ready at once if the peer hung up */
		state2 = ACTIVE;
		unlock();
		break
	:: else ->
		/* EEXIST; once w is stopped, its number is free */
		assert(state != IDLE);
		unlock();
		if
		:: tries < NTRY -> tries++
		:: else -> state == IDLE /* after w's stop */
		fi;
		lock()
	od;
	/* everything else has settled: w2's hang-up became src2's cancel */
	timeout -> assert(!hup1 || canceled2)
}
#endif

#ifdef SHARED_CV
/* other watches' cancels end: broadcasts on the shared watch_cv */
active proctype other()
{
end:
	do
	:: cvwait -> cvwait = 0
	od
}
#endif

active proctype owner()
{
	byte st;
#ifdef SETTLE
	/* everything else has settled: a hang-up became a cancel */
	timeout -> assert(!hup1 || canceled);
#endif
	stop();
	/* "fired": the cancel has happened */
	assert(removed || canceled);
	/* "stopped before it fired": the watch never cancels */
	assert(!removed || !wcanceled);
#ifdef SECOND
	/* fd stays open (w2 watches it), but no poll looks at it for w */
	assert(!polling);
	w_freed = 1
#else
	/* close(fd): no poll looks at the number any more */
	atomic { assert(!polling); conn = 0 };
	w_freed = 1;
	/* the number may name another connection, whose peer may hang up */
	if
	:: conn = 2;
		if
		:: hup2 = 1
		:: skip
		fi
	:: skip
	fi
#endif
}
