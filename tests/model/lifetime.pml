/*
 * lifetime.pml: nothing touches a source after destroy returned 0
 * (issue 12; the users count of src/source.c cancel__waiter_enter/leave,
 * cancel_source_destroy, teardown, busy_locked; src/callback.c
 * unregister_slow; src/wrap_io.c, src/wrap_cond.c, src/libthread.c).
 *
 * S's state word st holds CANCELED, DONE, DWAIT and a count of users:
 * threads inside a call on S. A call that can block, loop or park enters
 * the count at its start and leaves with its last access to S. S's lock
 * guards two callbacks (H: the cond waiter's hook, X: a callback that the
 * Unregisterer unregisters), current_ and gen_ (with GEN_WAIT).
 *
 *   Canceller: CAS in CANCELED (unpark_all if its old value counted
 *     users); lock; while a callback is registered: pop it, current_,
 *     unlock, run fn, lock, current_ = none, cb DONE (its src_ cleared);
 *     if GEN_WAIT: bump gen_, clear GEN_WAIT, unlock, unpark_all(gen_),
 *     lock. Unlock; fetch-or DONE; unpark_all if DWAIT.
 *   IO (cancel_read/write, -DIO): enter; two attempts, each: poll (park
 *     on the word until CANCELED, or the fd is ready) unless the fd is a
 *     regular file (chosen at the start; -DPIPE / -DREGULAR fix it): then
 *     no poll at all; the check before the attempt (reads CANCELED:
 *     ECANCELED ends the call); the attempt (the fd only). Leave.
 *   CondWaiter (cancel_cond_wait holding mu, -DCOND): enter; try_register
 *     (H) (under S's lock: ECANCELED if CANCELED); cond_wait: release mu,
 *     wake on H's broadcast (a persistent flag: condwait.pml checks that
 *     no wake-up is lost), re-acquire mu (MuHolder may hold it for a
 *     while); unregister(H); the final check (reads CANCELED); leave.
 *   MuHolder (with COND): lock mu, unlock mu, anywhere in the run.
 *   Unregisterer (-DUNREG): unregister(X): cb->src_ (the caller's memory)
 *     is S while X is registered or running; then lock S: registered:
 *     remove it (true); running on the Canceller: set GEN_WAIT, enter
 *     (under the lock, first time only), unlock, park on gen_, lock, look
 *     again; else stop. Unlock; leave if it entered (its last access).
 *   Timer (the library thread, -DTIMER): S is armed; a firing takes S out
 *     of the wheel and enters the count (one step: both under w_mu),
 *     cancel_with(S, ETIMEDOUT) (the Canceller's code: one of the two wins
 *     the CAS), leave.
 *   destroy: if CANCELED and not DONE: wait for DONE; then if CANCELED:
 *     wait for users == 0 (DWAIT + park on the word); lock, read the word:
 *     EBUSY if a callback is registered or (not CANCELED and users > 0);
 *     else 0. With TIMER, after 0: disarm (S off the wheel, under
 *     w_mu), then wait for users == 0 again: a firing in progress.
 *   Destroyer (the owner): may call destroy once before it lets the
 *     Canceller cancel (EBUSY while a call is inside or a callback is
 *     registered; 0 only if nothing is, and then no cancel follows); then
 *     destroy until it returns 0. After 0 the storage is poisoned:
 *     freed = true.
 *
 * The contract: destroy does not race the start of another call. The
 * Destroyer's calls begin after every other call made its first access to
 * S (the Unregisterer: its first lock), and after the Canceller's CAS
 * unless it is the early try. -DUNREG_EARLY drops the Unregisterer from
 * that gate: its read of cb->src_ may then come before destroy and its
 * lock after it (lifetime_flaw_unreg_early.pml).
 *
 * -DPIN models a fix of that flaw: unregister pins the callback (one RMW
 * on cb's state, the caller's memory: set "in flight", read the state)
 * before it uses cb->src_; the Canceller, completing cb under S's lock
 * before DONE, enters the count on its behalf if it is pinned; the
 * unregister, having seen cb removed or DONE under S's lock, leaves that
 * count after its last unlock. It no longer enters the count itself.
 *
 * Every access to S is touch(role): assert(!freed || role), where role is
 * a hidden variable that is always 0 and names the thread in pan's report.
 *
 * Properties: no access to S after destroy returned 0; each fn runs at
 * most once and never after an unregister of it returned; unregister
 * returns true exactly when fn never runs; at the end H ran exactly once
 * if it was registered, X ran exactly once unless removed, the count is 0,
 * the lock free, no GEN_WAIT; no deadlock (invalid end state); with -DLIVE
 * (pan -DNP, ./pan -l -f) no thread stays blocked forever.
 *
 * Broken variants: BROKEN_IO_POLL_ONLY (IO counted only around its poll;
 * regular-file chunks never), BROKEN_WAIT_FLAG (the parked unregister is
 * not counted; destroy sees its GEN_WAIT, which the Canceller clears when
 * it wakes it), BROKEN_COND_EARLY_LEAVE (the cond waiter leaves once woken,
 * before re-acquiring mu and its final check), BROKEN_NO_USER_WAIT
 * (destroy of a canceled source does not wait for users == 0),
 * BROKEN_TIMER_NO_WAIT with TIMER (disarm does not wait for the firing),
 * BROKEN_NO_WAKE (the CAS does not wake the users it counted).
 */

#define NPID 10

#define CANCELED 1
#define DONE 2
#define DWAIT 4
#define USER 8
#define CNT(s) ((s) / USER)

#define ECANCELED 125
#define EBUSY 16

#define HOOK 0		/* the cond waiter's hook */
#define XCB 1		/* the Unregisterer's callback */
#define NCB 2
#define NONE 255

#define CB_IDLE 0
#define CB_REG 1
#define CB_RUNNING 2
#define CB_DONE 3
#define CB_REMOVED 4

/* what wait_state waits for */
#define W_DONE 1
#define W_USERS 2
#define HOLDS(w, s) \
	(((w) == W_DONE && ((s) & DONE)) || ((w) == W_USERS && CNT(s) == 0))

/* busy_locked, on the word s read under the lock */
#ifdef BROKEN_WAIT_FLAG
#define BUSY(s) (cbst[HOOK] == CB_REG || cbst[XCB] == CB_REG || \
	(!((s) & CANCELED) && CNT(s) > 0) || gwait)
#else
#define BUSY(s) (cbst[HOOK] == CB_REG || cbst[XCB] == CB_REG || \
	(!((s) & CANCELED) && CNT(s) > 0))
#endif

#ifdef IO
#define N_IO 1
#else
#define N_IO 0
#endif
#ifdef COND
#define N_COND 1
#else
#define N_COND 0
#endif
#ifdef UNREG
#define N_UNREG 1
#else
#define N_UNREG 0
#endif
#define NSTART (N_IO + N_COND + N_UNREG)

/* S */
byte st;
bit slk;
byte cbst[NCB];		/* cb->state_; cb->src_ == S while REG or RUNNING */
byte current = NONE;
bool gwait;		/* GEN_WAIT */
byte gen;
#ifdef TIMER
bool armed = true;	/* S is in the timer heap */
#endif
bool pw[NPID];		/* parked on the state word */
bool pg[NPID];		/* parked on gen_ */

/* user side */
byte mu = NONE;		/* the cond waiter's mutex: owner pid */
bool hookfired;		/* H's broadcast */

/* ghosts */
bool freed;
byte started;		/* calls that made their first access to S */
byte ran[NCB];
bool unreg_ret[NCB];	/* an unregister of cb returned */
bool removed[NCB];
#ifdef PIN
bool pinned[NCB];	/* cb's state: an unregister is in flight */
bool counted_for[NCB];	/* cb's state: the canceller counted it in S */
#endif
bool allow_cancel;
bool io_done, cw_done, un_done, ca_done, de_done, mh_done;
bool un_ret;

/* always 0: their names show in pan's report of a failed touch() */
hidden byte canceller, io_caller, cond_waiter, unregisterer, timer_firing;
hidden byte destroyer;

inline touch(role)
{
	assert(!freed || role)
}

inline slock(role)
{
	atomic { touch(role); slk == 0 -> touch(role); slk = 1 }
}

inline sunlock(role)
{
	d_step { touch(role); slk = 0 }
}

inline mu_lock()
{
	atomic { mu == NONE -> mu = _pid }
}

inline mu_unlock()
{
	d_step { assert(mu == _pid); mu = NONE }
}

/* futex-style: sleeps only while the word still equals v (a read of S) */
inline park_word(v, role)
{
	atomic {
		touch(role);
		if
		:: st == v -> pw[_pid] = true
		:: else
		fi
	};
	!pw[_pid]
}

inline park_gen(v, role)
{
	atomic {
		touch(role);
		if
		:: gen == v -> pg[_pid] = true
		:: else
		fi
	};
	!pg[_pid]
}

/* never reads S: may run after free */
inline unpark_word()
{
	d_step {
		pw[0] = false; pw[1] = false; pw[2] = false; pw[3] = false;
		pw[4] = false; pw[5] = false; pw[6] = false; pw[7] = false;
		pw[8] = false; pw[9] = false
	}
}

inline unpark_gen()
{
	d_step {
		pg[0] = false; pg[1] = false; pg[2] = false; pg[3] = false;
		pg[4] = false; pg[5] = false; pg[6] = false; pg[7] = false;
		pg[8] = false; pg[9] = false
	}
}

/* cancel__waiter_enter */
inline enter(role)
{
	d_step { touch(role); st = st + USER }
}

/* cancel__waiter_leave: the decrement is the last access to S */
inline leave(role, old)
{
	d_step { touch(role); old = st; st = st - USER };
	if
	:: (old & DWAIT) -> unpark_word()
	:: else
	fi;
	old = 0
}

/* destroy's wait_state: park until HOLDS(w, st) */
inline wait_state(w, s)
{
	do
	:: d_step { touch(destroyer); s = st };
		if
		:: HOLDS(w, s) -> break
		:: !HOLDS(w, s) && !(s & DWAIT) ->
			d_step { touch(destroyer); st = st | DWAIT }
		:: !HOLDS(w, s) && (s & DWAIT) ->
			park_word(s, destroyer)
		fi
	od;
	s = 0
}

/* run_list's step for callback c (S's lock held, c registered) */
inline run_cb(c, role)
{
	d_step {
		touch(role);
		cbst[c] = CB_RUNNING;
		current = c
	};
	sunlock(role);
	/* fn */
	d_step {
		assert(!unreg_ret[c] && ran[c] == 0);
		ran[c]++;
		if
		:: c == HOOK -> hookfired = true	/* broadcast */
		:: else
		fi
	};
	slock(role);
	d_step {
		touch(role);
		current = NONE;
		cbst[c] = CB_DONE;	/* src_ cleared: owner may reuse cb */
#ifdef PIN
		/* an unregister in flight may hold S: count it */
		if
		:: pinned[c] -> st = st + USER; counted_for[c] = true
		:: else
		fi
#endif
	};
	if
	:: gwait ->
		d_step { touch(role); gen++; gwait = false };
		sunlock(role);
		unpark_gen();
		slock(role)
	:: else
	fi;
	c = NONE
}

/* cancel_source_cancel_with: cancel__begin, then run_list */
/* mark: the call counts in started once its CAS is done (the Canceller) */
inline cancel(role, won, old, c, mark)
{
	d_step {
		touch(role);
		old = st;
		if
		:: (st & CANCELED) -> won = false
		:: else -> st = st | CANCELED; won = true
		fi;
		if
		:: mark -> started++
		:: else
		fi
	};
	if
	:: won ->
#ifndef BROKEN_NO_WAKE
		if
		:: CNT(old) > 0 -> unpark_word()
		:: else
		fi;
#endif
		slock(role);
		do
		:: atomic { cbst[HOOK] == CB_REG -> c = HOOK }; run_cb(c, role)
		:: atomic { cbst[XCB] == CB_REG -> c = XCB }; run_cb(c, role)
		:: else -> break
		od;
		sunlock(role);
		d_step { touch(role); old = st; st = st | DONE };
		if
		:: (old & DWAIT) -> unpark_word()
		:: else
		fi
	:: else
	fi;
	old = 0
}

/*
 * cancel_callback_unregister(c) on a thread other than fn's. gate: count
 * this call in started after its first lock (the Unregisterer).
 */
inline unregister(c, role, ret, g, counted, gate)
{
	/* cb->src_ (the caller's memory): S while registered or running */
	if
#ifdef PIN
	/* one RMW on cb's state: pin it and read it */
	:: atomic {
		cbst[c] == CB_REG || cbst[c] == CB_RUNNING ->
		pinned[c] = true
	   } ->
#else
	:: cbst[c] == CB_REG || cbst[c] == CB_RUNNING ->
#endif
		slock(role);
#ifndef UNREG_EARLY
		if
		:: gate -> started++
		:: else
		fi;
#endif
		do
		:: cbst[c] == CB_REG ->
			d_step {
				cbst[c] = CB_REMOVED;
				removed[c] = true;
				ret = true
			};
			break
		:: cbst[c] == CB_RUNNING ->
			d_step { touch(role); gwait = true; g = gen };
#if !defined(BROKEN_WAIT_FLAG) && !defined(PIN)
			if
			:: !counted -> enter(role); counted = true
			:: else
			fi;
#endif
			sunlock(role);
			park_gen(g, role);
			slock(role)
		:: else -> break
		od;
		sunlock(role);
#ifdef PIN
		/* final: we saw c removed or DONE under S's lock */
		counted = counted_for[c];
		d_step { pinned[c] = false; counted_for[c] = false };
#endif
		if
		:: counted -> leave(role, g); counted = false
		:: else
		fi
	:: else ->
#ifndef UNREG_EARLY
		if
		:: gate -> started++
		:: else
		fi
#endif
	fi;
	unreg_ret[c] = true;
	g = 0
}

proctype Canceller()
{
	bool won;
	byte old;
	byte c = NONE;

end_never:
	allow_cancel;	/* not if the owner's first destroy returned 0 */
	cancel(canceller, won, old, c, true);
	ca_done = true
}

#ifdef IO
proctype IOCaller()
{
	bool regular;
	byte i;
	byte s;
	byte old;

#if defined(PIPE)
	regular = false;
#elif defined(REGULAR)
	regular = true;
#else
	if
	:: regular = true
	:: regular = false
	fi;
#endif
#ifdef BROKEN_IO_POLL_ONLY
	started++;
#else
	d_step { touch(io_caller); st = st + USER; started++ };
#endif
	do
	:: i == 2 -> break
	:: i < 2 ->
		if
		:: !regular ->
			/* cancel_poll / wait_ready */
#ifdef BROKEN_IO_POLL_ONLY
			enter(io_caller);
#endif
			d_step { touch(io_caller); s = st };
			do
			:: (s & CANCELED) -> break
			:: !(s & CANCELED) -> break	/* the fd is ready */
			:: !(s & CANCELED) ->
				park_word(s, io_caller);
				d_step { touch(io_caller); s = st }
			od;
#ifdef BROKEN_IO_POLL_ONLY
			leave(io_caller, old);
#endif
			s = 0
		:: else
		fi;
		/* the check before the attempt */
		d_step { touch(io_caller); s = st };
		if
		:: (s & CANCELED) -> break	/* ECANCELED */
		:: else
		fi;
		/* the attempt: the fd only */
		i++
	od;
#ifndef BROKEN_IO_POLL_ONLY
	leave(io_caller, old);
#endif
	s = 0;
	i = 0;
	io_done = true
}
#endif

#ifdef COND
proctype CondWaiter()
{
	byte rc;
	byte old;
	byte g;
	bool counted;
	bool ret;
	bool left;

	mu_lock();
	d_step { touch(cond_waiter); st = st + USER; started++ };
	/* try_register(H): CANCELED read under the lock */
	slock(cond_waiter);
	if
	:: (st & CANCELED) -> rc = ECANCELED
	:: else -> cbst[HOOK] = CB_REG
	fi;
	sunlock(cond_waiter);
	if
	:: rc == 0 ->
		/* cond_wait: release mu, sleep until the broadcast */
		d_step { assert(mu == _pid); mu = NONE };
		hookfired;
#ifdef BROKEN_COND_EARLY_LEAVE
		leave(cond_waiter, old);
		left = true;
#endif
		mu_lock();
		unregister(HOOK, cond_waiter, ret, g, counted, false);
		assert(!ret);	/* H ran: it woke us */
		/* the final check */
		d_step {
			touch(cond_waiter);
			if
			:: (st & CANCELED) -> rc = ECANCELED
			:: else
			fi
		}
	:: else
	fi;
	if
	:: !left -> leave(cond_waiter, old)
	:: else
	fi;
	assert(rc == ECANCELED);
	mu_unlock();
	cw_done = true
}

proctype MuHolder()
{
	mu_lock();
	mu_unlock();
	mh_done = true
}
#endif

#ifdef UNREG
proctype Unregisterer()
{
	bool ret;
	bool counted;
	byte g;

#ifdef UNREG_EARLY
	started++;
#endif
	unregister(XCB, unregisterer, ret, g, counted, true);
	un_ret = ret;
	un_done = true
}
#endif

#ifdef TIMER
proctype Timer()
{
	bool won;
	byte old;
	byte c = NONE;

	/* w_mu: take S off the wheel, enter */
end_idle:
	atomic {
		armed ->
		armed = false;
		touch(timer_firing);
		st = st + USER
	};
	cancel(timer_firing, won, old, c, false);
	leave(timer_firing, old)
}
#endif

/* cancel_source_destroy: 0 or EBUSY */
inline destroy(s, rc)
{
	d_step { touch(destroyer); s = st };
	if
	:: (s & CANCELED) && !(s & DONE) -> wait_state(W_DONE, s)
	:: else
	fi;
#ifndef BROKEN_NO_USER_WAIT
	d_step { touch(destroyer); s = st };
	if
	:: (s & CANCELED) -> wait_state(W_USERS, s)
	:: else
	fi;
#endif
	/* teardown */
	slock(destroyer);
	d_step { touch(destroyer); s = st };
	if
	:: BUSY(s) ->
		d_step { touch(destroyer); st = st & ~DWAIT };
		rc = EBUSY
	:: else ->
		rc = 0
	fi;
	sunlock(destroyer);
#ifdef TIMER
	if
	:: rc == 0 ->
		/* disarm: off the wheel (w_mu), then a firing in progress */
		d_step { touch(destroyer); armed = false };
#ifndef BROKEN_TIMER_NO_WAIT
		wait_state(W_USERS, s)
#endif
	:: else
	fi;
#endif
	s = 0
}

proctype Destroyer()
{
	byte s;
	byte rc;

	/* the owner may try once before it cancels: EBUSY while busy */
	if
	:: (started == NSTART) ->
		destroy(s, rc);
		if
		:: rc == 0 -> goto poisoned	/* and no cancel follows */
		:: else
		fi
	:: skip
	fi;
	allow_cancel = true;
	(started == NSTART + 1);	/* the cancel began (no race with it) */
	do
	:: destroy(s, rc);
		if
		:: rc == 0 -> break
		:: else
		fi
	od;
poisoned:
	/* destroy returned 0: the storage is poisoned */
	freed = true;
	de_done = true
}

#ifdef LIVE
/* passes its progress label only once every call has returned */
proctype Idle()
{
	bool t;

end_idle:
	do
	:: !(io_done && cw_done && un_done && de_done &&
	    (ca_done || !allow_cancel)) ->
		t = true;
		t = false
	:: (io_done && cw_done && un_done && de_done &&
	    (ca_done || !allow_cancel)) -> break
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
		run Canceller();
#ifdef IO
		run IOCaller();
#else
		io_done = true;
#endif
#ifdef COND
		run CondWaiter();
		run MuHolder();
#else
		cw_done = true;
		mh_done = true;
#endif
#ifdef UNREG
		cbst[XCB] = CB_REG;
		run Unregisterer();
#else
		un_done = true;
#endif
		run Destroyer();
#ifdef TIMER
		run Timer();
#endif
#ifdef LIVE
		run Idle()
#endif
	};
#ifndef LIVE
	(io_done && cw_done && un_done && de_done && mh_done &&
	    (ca_done || !allow_cancel));
	assert(freed && slk == 0 && !gwait && CNT(st) == 0);
#ifdef UNREG
	assert(ran[XCB] + removed[XCB] == 1 && un_ret == removed[XCB]);
#endif
	assert(ran[HOOK] == (cbst[HOOK] != CB_IDLE));
	assert(mu == NONE)
#endif
}
