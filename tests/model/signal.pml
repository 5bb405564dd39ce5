/*
 * signal.pml: canceling from a signal handler (src/signal.c
 * cancel_source_cancel_from_signal; src/source.c cancel__begin with
 * from_signal, cancel__signal_finish, run_list, destroy; src/libthread.c
 * cancel__signal_post, run_signals).
 *
 * Source S (index 1) has callback cb1 registered before anything starts.
 *
 *   T: the thread the signal interrupts. It registers cb2 on S (lock,
 *     read CANCELED under it, push or run fn inline, unlock); the handler
 *     runs on T before, inside (holding S's lock) or after that register.
 *     Then T destroys S (after the waiter entered: the user's side of the
 *     contract) and frees it.
 *   handler (inline on T, never blocks, never locks): begin(S, EINTR,
 *     from_signal): one CAS sets CANCELED|SIGNAL; if it won and the count
 *     is > 0, unpark_all when that is signal-safe (the futex backend;
 *     -DPTHREAD: not); then the Treiber push (read head, next = head, CAS
 *     head) and the kick.
 *   W: cancel_wait: enter (count + 1), while not CANCELED park on the
 *     word, leave (count - 1, unpark_all if DWAIT was set).
 *   LT: the library thread: waits for a kick, takes the whole list with
 *     an exchange, reverses it, and for each source (its next read first)
 *     signal_finish: unpark_all if waiters and the handler could not wake
 *     them, then run_list (pop and run cb2, cb1; set DONE, unpark if
 *     DWAIT).
 *   destroy: CANCELED|SIGNAL, not DONE, runner_ not ours: (the library
 *     thread runs) wait for DONE, then for no waiters; teardown.
 *
 * -DTWO: a second handler, on thread H2, cancels a second source (index
 * 2, no callbacks, no waiter), then H2 destroys it: the two pushes race.
 * -DLIVE: the non-progress set-up (an Idle process whose loop passes a
 * progress label only after W returned).
 *
 * Properties: every access to a source asserts it is not freed; W
 * returns; cb1 runs exactly once, on LT; cb2 runs exactly once (on LT, or
 * inline on T when its register saw CANCELED); destroy frees only when
 * DONE and no waiter; no deadlock.
 *
 * Broken variants: BROKEN_HANDLER_RUNS (the handler runs the callbacks
 * itself instead of posting; the signal lands while T holds S's lock, so
 * the handler spins on a lock its own thread holds: invalid end state);
 * BROKEN_RACY_PUSH with TWO (the push reads the head, then stores it with
 * a plain write: a push is lost, or links a source that was already taken,
 * finished and freed); BROKEN_NO_LT_WAKE with PTHREAD (signal_finish
 * skips the wake-up the handler could not do: W sleeps forever).
 */

#define CANCELED 1
#define DONE 2
#define DWAIT 4
#define SIGNAL 8
#define WAITER 16
#define CNT(s) ((s) / WAITER)


#ifdef TWO
#define NSRC 3
#else
#define NSRC 2
#endif

byte st[NSRC];
bit lk[NSRC];
bool freed[NSRC];
byte next[NSRC];
byte runner[NSRC];	/* 0: none, else the _pid running its list */

byte head;		/* sig_head: 0 = empty */
byte ltpid;		/* the library thread's _pid */
bool kick;

bool parked[6];

/* S's callbacks */
bool cb1in = true;
bool cb2in;
byte cb1ran;
byte cb2ran;

/* ghosts */
bool wentered;
bool wdone;
bool hdone[NSRC];

inline touch(i)
{
	atomic { assert(!freed[i]) }
}

inline lock(i)
{
	atomic { assert(!freed[i]); lk[i] == 0 -> assert(!freed[i]); lk[i] = 1 }
}

inline unlock(i)
{
	d_step { assert(!freed[i]); lk[i] = 0 }
}

/* never reads the word */
inline unpark_all()
{
	d_step {
		parked[0] = false;
		parked[1] = false;
		parked[2] = false;
		parked[3] = false;
		parked[4] = false;
		parked[5] = false
	}
}

inline park(i, v)
{
	atomic {
		assert(!freed[i]);
		if
		:: st[i] == v -> parked[_pid] = true
		:: else
		fi
	};
	!parked[_pid]
}

/* run_list(i) on LT (or, broken, on the handler's thread) */
inline run_list(i, old)
{
	lock(i);
	runner[i] = _pid;
	do
	:: i == 1 && cb2in ->
		cb2in = false;
		unlock(i);
		cb2ran++;
		lock(i)
	:: i == 1 && !cb2in && cb1in ->
		cb1in = false;
		unlock(i);
		d_step { assert(_pid == ltpid); cb1ran++ };
		lock(i)
	:: else -> break
	od;
	runner[i] = 0;
	unlock(i);
	d_step {
		assert(!freed[i]);
		old = st[i];
		st[i] = st[i] | DONE
	};
	if
	:: (old & DWAIT) -> unpark_all()
	:: else
	fi
}

/* cancel_source_cancel_from_signal(i): never blocks, never locks */
inline handler(i, won, old)
{
	d_step {
		assert(!freed[i]);
		old = st[i];
		if
		:: (old & CANCELED) -> won = false
		:: else -> st[i] = st[i] | CANCELED | SIGNAL; won = true
		fi
	};
	if
	:: won ->
		/* fd: none. futex wake is signal-safe; the pthread
		 * backend's parking lot is not. */
#ifndef PTHREAD
		if
		:: CNT(old) > 0 -> unpark_all()
		:: else
		fi;
#endif
#ifdef BROKEN_HANDLER_RUNS
		run_list(i, old)
#else
		/* cancel__signal_post: Treiber push */
#ifdef BROKEN_RACY_PUSH
		old = head;
		d_step { assert(!freed[i]); next[i] = old };
		head = i;
#else
		old = head;
		do
		:: atomic { assert(!freed[i]); next[i] = old };
			if
			:: atomic { head == old -> head = i; break }
			:: atomic { head != old -> old = head }
			fi
		od;
#endif
		kick = true
#endif
	:: else
	fi;
	hdone[i] = true
}

/* destroy(i) on a thread that is not LT, after the handler */
inline destroy(i, s)
{
	d_step { assert(!freed[i]); s = st[i] };
	assert(s & CANCELED);
	/* SIGNAL, runner_ NULL or LT's frame: not ours, lt_ensure: runs */
	do
	:: atomic { assert(!freed[i]); s = st[i] };
		if
		:: (s & DONE) && CNT(s) == 0 -> break
		:: !((s & DONE) && CNT(s) == 0) && !(s & DWAIT) ->
			d_step { assert(!freed[i]); st[i] = st[i] | DWAIT }
		:: !((s & DONE) && CNT(s) == 0) && (s & DWAIT) ->
			park(i, s)
		fi
	od;
	/* teardown: lock, not busy, unlock, disarm, fd close */
	lock(i);
	d_step { assert((i != 1 || (!cb1in && !cb2in)) && runner[i] == 0) };
	unlock(i);
	d_step {
		assert((st[i] & DONE) && CNT(st[i]) == 0);
		freed[i] = true
	}
}

proctype T()
{
	bool won;
	byte old;
	byte s;

#ifndef BROKEN_HANDLER_RUNS
	if
	:: handler(1, won, old)
	:: skip
	fi;
#endif
#ifdef TWO
	/* no register: keeps the state space small */
	handler(1, won, old);
	cb2ran = 1;
#else
	/* register cb2 on S */
	lock(1);
#ifdef BROKEN_HANDLER_RUNS
	handler(1, won, old);	/* lands while T holds the lock */
#else
	if
	:: !hdone[1] -> handler(1, won, old)
	:: skip
	fi;
#endif
	if
	:: (st[1] & CANCELED) ->
		unlock(1);
		cb2ran++	/* inline */
	:: else ->
		cb2in = true;
		unlock(1)
	fi;
	if
	:: !hdone[1] -> handler(1, won, old)
	:: else
	fi;
#endif
	(wentered);
	destroy(1, s)
}

proctype W()
{
	byte s;
	byte old;

	d_step {
		assert(!freed[1]);
		st[1] = st[1] + WAITER;
		s = st[1];
		wentered = true
	};
	do
	:: (s & CANCELED) -> break
	:: else ->
		park(1, s);
		d_step { assert(!freed[1]); s = st[1] }
	od;
	atomic {
		assert(!freed[1]);
		old = st[1];
		st[1] = st[1] - WAITER
	};
	if
	:: (old & DWAIT) -> unpark_all()
	:: else
	fi;
	wdone = true
}

proctype Lt()
{
	byte lst;
	byte fifo;
	byte nx;
	byte s;
	byte i;

	ltpid = _pid;
end_lt:
	do
	:: atomic { kick -> kick = false };
		/* run_signals */
		atomic { lst = head; head = 0 };
		fifo = 0;
		do
		:: lst != 0 ->
			d_step {
				assert(!freed[lst]);
				nx = next[lst];
				next[lst] = fifo
			};
			fifo = lst;
			lst = nx
		:: else -> break
		od;
		do
		:: fifo != 0 ->
			d_step {
				assert(!freed[fifo]);
				i = fifo;
				fifo = next[i];
				next[i] = 0
			};
			/* cancel__signal_finish(i) */
			d_step { assert(!freed[i]); s = st[i] };
#if defined(PTHREAD) && !defined(BROKEN_NO_LT_WAKE)
			if
			:: CNT(s) > 0 -> unpark_all()
			:: else
			fi;
#endif
			run_list(i, s);
			i = 0
		:: else -> break
		od
	od
}

#ifdef TWO
proctype H2()
{
	bool won;
	byte old;
	byte s;

	handler(2, won, old);
	destroy(2, s)
}
#endif

#ifdef LIVE
proctype Idle()
{
	bool t;

end_idle:
	do
	:: !wdone ->
		t = true;
		t = false
	:: wdone -> break
	od;
end_done:
	do
	:: t = true;
progress_done:
		t = false
	od
}
#endif

init {
	atomic {
		run T();
#ifdef TWO
		wentered = true;	/* no waiter: small state space */
		wdone = true;
#else
		run W();
#endif
		run Lt();
#ifdef TWO
		run H2();
#endif
#ifdef LIVE
		run Idle();
#endif
	};
#ifndef LIVE
	/* Lt never ends (and, having a higher _pid, keeps T and W counted
	 * in _nr_pr): wait for the ends themselves */
#ifdef TWO
	(wdone && freed[1] && freed[2]);
#else
	(wdone && freed[1]);
#endif
	assert(cb1ran == 1 && cb2ran == 1);
	assert(head == 0 && !cb1in && !cb2in)
#endif
}
