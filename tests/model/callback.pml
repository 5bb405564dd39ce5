/*
 * callback.pml: the callback list protocol of src/callback.c.
 *
 * The state word (st) holds CANCELED and DONE; the list lock is a separate
 * word (lk): lock = exchange 1 until it returns 0, unlock = store 0. The
 * list is a LIFO stack guarded by the lock. register takes the lock, then
 * reads CANCELED under it: if set, it unlocks and runs fn inline, else it
 * pushes and unlocks. cancel sets CANCELED first (one CAS on st; fails if
 * already set), and only then takes the lock and pops one node at a time,
 * publishes it as "current", drops the lock and runs it. After the list is
 * empty it unlocks and then sets DONE (a separate fetch-or).
 *
 * Scenarios (spin -DSCEN=n):
 *   1  race:    two concurrent cancels; a worker registers cb2 while they
 *               run, then unregisters cb0 (may wait) and try_unregisters
 *               cb1; a second worker unregisters cb0 as well.
 *   2  nested:  cb2 unregisters cb1 (which has not run yet: true, it never
 *               runs); cb0, the last to run, unregisters itself (false at
 *               once); another thread unregisters cb0 and must wait for it
 *               even though cb0 released itself; a second cancel races.
 *   3  destroy: cb2 registers cb3 from inside fn (runs inline), cb1 tries
 *               destroy (EBUSY: cb0 still registered), cb0 destroys the
 *               source; the cancel loop must not touch it afterwards.
 *
 * -DONE_CANCEL drops the second, racing cancel of scenarios 1 and 2.
 *
 * Broken variants define one of BROKEN_SWAP, BROKEN_SEPARATE_FLAG,
 * BROKEN_RELEASED_SKIP, BROKEN_DESTROY_TOUCH, BROKEN_LOCK_BEFORE_CAS and
 * include this file.
 *
 * Sequentially consistent: this checks the protocol, not memory orders.
 */

#ifndef SCEN
#define SCEN 1
#endif

#if SCEN == 3
#define NCB 4
#else
#define NCB 3
#endif

#define NONE 255

/* state word bits (the lock is the separate word lk) */
#define CANCELED 1
#define DONE 4

/* callback states */
#define C_IDLE 0
#define C_REGISTERED 1
#define C_RUNNING 2
#define C_DONE 3
#define C_REMOVED 4
#define C_SWAPPED 5	/* BROKEN_SWAP only: detached with the whole list */

/* results */
#define R_OK 0
#define R_EBUSY 16
#define R_EINPROGRESS 115
#define R_EALREADY 114
#define R_ENOENT 2

/* what fn does while it runs */
#define A_NONE 0
#define A_SELF_UNREG 1
#define A_UNREG_CB1 2
#define A_DESTROY_OK 3
#define A_DESTROY_BUSY 4
#define A_REGISTER_CB3 5

byte st;			/* the state word: CANCELED, DONE */
bit lk;				/* src->lock_: the list lock */
byte list[NCB];			/* stack; head is list[nlist - 1] */
byte nlist;
byte cbst[NCB];			/* cb->state_ */
byte cur = NONE;		/* src->current_ */
byte runner = NONE;		/* src->runner_ */
bool wflag;			/* an unregister waits for current to end */
byte gen;			/* bumped when a waited-for callback ends */
byte action[NCB];

/* the canceller's stack frame (only the winning cancel uses it) */
bool fr_released;
bool fr_destroyed;

bool dead;			/* the source's storage was destroyed */

/* observers (not part of the protocol) */
byte ran[NCB];
bool running[NCB];
byte runseq[NCB];
byte nseq;
byte regseq[NCB];
byte nreg;
bool fromlist[NCB];		/* ran from the cancel loop (not inline) */
bool reg_true[NCB];		/* a register returned true */
bool reg_false[NCB];		/* a register returned false (ran inline) */
bool unreg_true[NCB];		/* an unregister returned true */
bool gone[NCB];			/* a completed unregister: must never run */
byte ncancel_true;
byte ncancel;

/* exchange(lk, 1) until it returns 0: spinning on 1 changes nothing, so
 * under sequential consistency it is a guard on lk == 0 */
inline lock_src()
{
	atomic { lk == 0 -> lk = 1 }
}

inline unlock_src()
{
	lk = 0
}

/* Remove c from the middle of the list (caller holds the lock). */
inline unlink(c, i)
{
	d_step {
		i = 0;
		do
		:: list[i] == c -> break
		:: else -> i++
		od;
		do
		:: i + 1 < nlist -> list[i] = list[i + 1]; i++
		:: else -> break
		od;
		nlist--;
		list[nlist] = NONE;
		i = 0
	}
}

/* A callback body that does nothing else (used for inline runs). */
inline run_leaf(c)
{
	d_step {
		assert(ran[c] == 0);
		assert(!gone[c]);
		ran[c]++;
		runseq[c] = nseq;
		nseq++
	}
}

/* try_register / register up to the point of running fn inline */
inline do_register(c, res)
{
#ifdef BROKEN_SEPARATE_FLAG
	/* CANCELED read BEFORE the lock is taken (an unlocked peek) */
	res = ((st & CANCELED) == 0);
	lock_src();
#else
	/* CANCELED read under the lock */
	lock_src();
	res = ((st & CANCELED) == 0);
#endif
	if
	:: res ->
		d_step {
			/* never push onto a list whose cancel has finished */
			assert(!(st & DONE));
			list[nlist] = c;
			nlist++;
			cbst[c] = C_REGISTERED;
			regseq[c] = nreg;
			nreg++;
			reg_true[c] = true
		};
		unlock_src()
	:: else ->
		unlock_src();
		reg_false[c] = true;
		run_leaf(c)
	fi
}

/* unregister: true iff removed before fn started; waits for a running fn
 * on another thread; returns false at once from inside fn. */
inline do_unregister(c, res, g, i)
{
	assert(!dead);
	lock_src();
	if
	:: cbst[c] == C_REGISTERED ->
		unlink(c, i);
		cbst[c] = C_REMOVED;
		unlock_src();
		assert(!unreg_true[c]);
		unreg_true[c] = true;
		res = true
	:: cbst[c] != C_REGISTERED && cur == c && runner == _pid ->
		/* from inside fn: the canceller must not touch cb again */
		fr_released = true;
		cbst[c] = C_DONE;
		unlock_src();
		res = false
	:: cbst[c] != C_REGISTERED && cur == c && runner != _pid ->
		wflag = true;
		g = gen;
		unlock_src();
		(gen != g);	/* park until the generation moves */
		res = false
	:: else ->
		unlock_src();
		res = false
	fi;
	if
	:: !(cur == c && runner == _pid) ->
		/* returned on a thread other than fn's: fn is not running
		 * and will never run again */
		assert(!running[c]);
		gone[c] = true
	:: else
	fi
}

inline do_try_unregister(c, rc, i)
{
	lock_src();
	if
	:: cbst[c] == C_REGISTERED ->
		unlink(c, i);
		cbst[c] = C_REMOVED;
		unreg_true[c] = true;
		rc = R_OK
	:: cbst[c] != C_REGISTERED && cur == c ->
		rc = R_EINPROGRESS
	:: cbst[c] == C_DONE && cur != c ->
		rc = R_EALREADY
	:: else ->
		rc = R_ENOENT
	fi;
	unlock_src();
	if
	:: rc == R_OK || rc == R_ENOENT ->
		assert(ran[c] == 0);
		gone[c] = true
	:: rc == R_EALREADY ->
		assert(ran[c] == 1 && !running[c]);
		gone[c] = true
	:: else
	fi
}

/* destroy, called from fn on the canceller's thread */
inline do_destroy(rc)
{
	assert(!dead);
	lock_src();
	assert(cur != NONE && runner == _pid);
	if
	:: nlist == 0 ->
		/* the storage is gone: every later access is a bug */
		d_step {
			fr_destroyed = true;
			dead = true;
			st = 0;
			lk = 0;	/* teardown unlocks; then the memory goes */
			cur = NONE;
			runner = NONE
		};
		rc = R_OK
	:: else ->
		unlock_src();
		rc = R_EBUSY
	fi
}

inline run_fn(c, res, g, i)
{
	d_step {
		assert(ran[c] == 0);
		assert(!gone[c]);
		ran[c]++;
		running[c] = true;
		fromlist[c] = true;
		runseq[c] = nseq;
		nseq++
	};
	if
	:: action[c] == A_SELF_UNREG ->
		do_unregister(c, res, g, i);
		assert(res == false)
	:: action[c] == A_UNREG_CB1 ->
		do_unregister(1, res, g, i);
		assert(res == true)
	:: action[c] == A_DESTROY_OK ->
		do_destroy(i);
		assert(i == R_OK);
		i = 0
	:: action[c] == A_DESTROY_BUSY ->
		do_destroy(i);
		assert(i == R_EBUSY);
		i = 0
	:: action[c] == A_REGISTER_CB3 ->
		do_register(3, res);
		assert(res == false)
	:: else
	fi;
	running[c] = false
}

/* cancel__begin's CAS: set CANCELED unless already set */
inline set_canceled(res)
{
	atomic {
		ncancel++;
		if
		:: (st & CANCELED) -> res = false
		:: else -> st = st | CANCELED; res = true
		fi
	}
}

proctype Canceller()
{
	bool res;
	byte c = NONE;
	byte g;
	byte i;
#ifdef BROKEN_SWAP
	byte sw[NCB];
	byte nsw;
	byte k;
#endif

#ifdef BROKEN_LOCK_BEFORE_CAS
	/* an already canceled source is left alone ... */
	if
	:: (st & CANCELED) -> goto out
	:: else
	fi;
#else
	set_canceled(res);
	if
	:: !res ->
		/* any cancel that returned leaves the token canceled */
		assert(dead || (st & CANCELED));
		goto out
	:: else
	fi;
	ncancel_true++;
#endif

#ifdef BROKEN_SWAP
	/* the .NET bug: take the whole list at once */
	lock_src();
	d_step {
		nsw = 0;
		do
		:: nlist > 0 ->
			nlist--;
			sw[nsw] = list[nlist];
			list[nlist] = NONE;
			cbst[sw[nsw]] = C_SWAPPED;
			nsw++
		:: else -> break
		od
	};
	unlock_src();
	k = 0;
	do
	:: k < nsw ->
		c = sw[k];
		lock_src();
		cbst[c] = C_RUNNING;
		cur = c;
		runner = _pid;
		unlock_src();
		run_fn(c, res, g, i);
		lock_src();
		cur = NONE;
		cbst[c] = C_DONE;
		if
		:: wflag -> wflag = false; gen++
		:: else
		fi;
		unlock_src();
		k++
	:: else -> break
	od;
	atomic { runner = NONE; st = st | DONE; i = 0 }
#else
	/* run_list: the lock is held at the top of each iteration */
	lock_src();
	runner = _pid;
	do
	:: nlist == 0 -> break
	:: else ->
		d_step {
			nlist--;
			c = list[nlist];
			list[nlist] = NONE;
			cbst[c] = C_DONE;	/* at the pop: cur tells running */
			cur = c;
			fr_released = false;
			fr_destroyed = false
		};
		unlock_src();
		run_fn(c, res, g, i);
#ifndef BROKEN_DESTROY_TOUCH
		if
		:: fr_destroyed -> goto out
		:: else
		fi;
#endif
		assert(!dead);
		lock_src();
#ifdef BROKEN_RELEASED_SKIP
		/* skips the source's bookkeeping too, not only the node */
		if
		:: fr_released -> goto next
		:: else
		fi;
#endif
		d_step {
			cur = NONE;	/* cbst is DONE since the pop */
			if
			:: wflag -> wflag = false; gen++; res = true
			:: else -> res = false
			fi
		};
		if
		:: res ->
			/* unlock, unpark the waiters, relock */
			unlock_src();
			lock_src()
		:: else
		fi;
#ifdef BROKEN_RELEASED_SKIP
next:
#endif
		c = NONE
	od;
	runner = NONE;
	unlock_src();
#ifdef BROKEN_LOCK_BEFORE_CAS
	/* ... but the list was drained before CANCELED is set */
	set_canceled(res);
	if
	:: !res -> goto out
	:: else
	fi;
	ncancel_true++;
#endif
	/* fetch-or DONE, after the unlock */
	st = st | DONE
#endif
out:
	assert(dead || (st & CANCELED));
}

#if SCEN == 1
proctype Worker()
{
	bool res;
	byte g;
	byte i;
	byte rc;

	do_register(2, res);
	do_unregister(0, res, g, i);
	do_try_unregister(1, rc, i);
}

proctype Worker2()
{
	bool res;
	byte g;
	byte i;

	do_unregister(0, res, g, i)
}
#endif

#if SCEN == 2
proctype Worker()
{
	bool res;
	byte g;
	byte i;

	do_unregister(0, res, g, i)
}
#endif

init {
	byte c;
	byte a;
	byte b;

	d_step {
		c = 0;
		do
		:: c < NCB -> list[c] = NONE; c++
		:: else -> break
		od;
		c = 0
	};
#if SCEN == 2
	action[0] = A_SELF_UNREG;
	action[2] = A_UNREG_CB1;
#endif
#if SCEN == 3
	action[0] = A_DESTROY_OK;
	action[1] = A_DESTROY_BUSY;
	action[2] = A_REGISTER_CB3;
#endif
	/* callbacks registered before any cancel: cb0, cb1 (and cb2) */
	do_register(0, a);
	do_register(1, a);
#if SCEN != 1
	do_register(2, a);
#endif
	atomic {
		run Canceller();
#if SCEN != 3
#ifndef ONE_CANCEL
		run Canceller();
#endif
		run Worker();
#endif
#if SCEN == 1
		run Worker2();
#endif
	};

	(_nr_pr == 1);	/* quiescence */

	d_step {
		assert(ncancel_true == 1);
		c = 0;
		do
		:: c < NCB ->
			assert(ran[c] <= 1);
			assert(!running[c]);
			/* true <=> never ran */
			assert(!unreg_true[c] || ran[c] == 0);
			/* registered and not removed -> ran exactly once */
			assert(!reg_true[c] || unreg_true[c] || ran[c] == 1);
			assert(!reg_false[c] || ran[c] == 1);
			c++
		:: else -> break
		od;
		/* LIFO among callbacks run by the cancel loop */
		a = 0;
		do
		:: a < NCB ->
			b = 0;
			do
			:: b < NCB ->
				assert(!(fromlist[a] && fromlist[b] &&
				    regseq[a] < regseq[b]) ||
				    runseq[a] > runseq[b]);
				b++
			:: else -> break
			od;
			a++
		:: else -> break
		od;
		if
		:: !dead ->
			assert(st == (CANCELED | DONE) && lk == 0);
			assert(cur == NONE && runner == NONE);
			assert(!wflag && nlist == 0)
		:: else
		fi;
		c = 0;
		a = 0;
		b = 0
	}
}
