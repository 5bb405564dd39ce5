/*
 * callback_release.pml: a callback that unregisters itself from inside its
 * own run (src/callback.c, RUNNING_MINE branch of cancel_callback_unregister;
 * released_add, released_running, cancel__released_done; src/source.c
 * run_list).
 *
 * One source A with one callback cb. The canceller runs cb; cb's fn
 * unregisters cb (under A's lock: state DONE, the run frame goes on the
 * global "released and still running" list under graph_mu, then src_ is
 * cleared), then unregisters it a second time (src_ is NULL: the frame is
 * found, it is ours, false at once). After fn returns the canceller takes
 * the frame off the list (broadcast on graph_cv) and never touches cb.
 *
 *   default  a Worker thread unregisters cb concurrently. It may read src_
 *            before the clear (then A's lock, and a park on gen until
 *            current_ moves on) or after it (then the released list and
 *            graph_cv). When it returns, fn is not running.
 *            Then the user (init) destroys and frees A (destroy waits for
 *            DONE) and calls unregister(cb) again: it must not touch A.
 *   -DFREE   fn frees cb right after unregistering itself. No Worker (a
 *            concurrent unregister of a freed cb is a user error). The user
 *            reuses cb's memory: re-registers it on CANCEL_TOKEN_NONE
 *            (possibly while the canceller is still in its tail), destroys
 *            A, and unregisters the new registration (true).
 *   -DABA    (with FREE) the reused cb is registered on another source and
 *            runs to completion there (state DONE, src_ NULL) while A's fn,
 *            which freed the old cb, still runs and waits for an event the
 *            user sets after unregistering the new cb. The stale frame on
 *            the released list still names cb's address. try_unregister
 *            of the new cb says EINPROGRESS (not EALREADY); with -DNO_TRY,
 *            unregister of the new cb waits for A's fn: deadlock.
 *   -DSTAMP  a proposed fix for ABA: released_add stamps the frame and
 *            cb->spare_ with a fresh number (under graph_mu), register
 *            zeroes spare_, and a lookup matches only if both agree.
 *
 * Every access to cb by the library or by the canceller on behalf of the
 * first registration asserts that cb is not freed and not reused
 * (touch_cb); every access to A asserts that A is not freed (touch_src).
 *
 * Broken variants: BROKEN_CLEAR_FIRST (src_ cleared before the frame is
 * on the list), BROKEN_TOUCH_CB (with FREE: the canceller writes cb's
 * state after fn returned).
 *
 * Sequentially consistent: this checks the protocol, not memory orders.
 */

#define NONE 255
#define CB 0

/* state word bits */
#define CANCELED 1
#define DONE 4

/* cb->state_ */
#define C_NONE 0
#define C_REGISTERED 1
#define C_RUNNING 2
#define C_DONE 3
#define C_REMOVED 4
#define C_ON_NONE 5

/* try_unregister results */
#define R_OK 0
#define R_EINPROGRESS 115
#define R_EALREADY 114
#define R_ENOENT 2

/* source A */
byte st;			/* state word: CANCELED, DONE */
bit lk;				/* A->lock_ */
bool listed;			/* cb is in A's list (one node) */
byte cur = NONE;		/* A->current_ */
byte runner = NONE;		/* A->runner_ (pid of the running frame) */
bool wflag;			/* GEN_WAIT */
byte gen;			/* A->gen_ (low bits) */
bool src_dead;			/* A was destroyed and freed */

/* cb */
byte cbst;			/* cb->state_ */
bool cbsrc;			/* cb->src_ == A */
bool cb_freed;			/* fn freed cb */
byte cb_inc;			/* 0: first registration, 1: reused memory */

/* the canceller's run frame (on its stack) */
bool fr_released;		/* frame.cb_released */
bool fr_relcb;			/* frame.released_cb == cb (set by add) */

/* global: graph_mu, graph_cv, the released list (one frame at most) */
bit gmu;
byte bcast;			/* graph_cv broadcasts so far */
bool rel_listed;		/* the frame is on the released list */
byte rel_count;			/* released_count */
byte rel_owner = NONE;		/* the listed frame's thread */
#ifdef STAMP
byte fr_stamp;			/* the frame's registration stamp */
byte cb_stamp;			/* cb->spare_: register zeroes it */
byte stamps;			/* global stamp counter (graph_mu) */
#define REL_MATCH (rel_listed && cb_stamp == fr_stamp)
#else
#define REL_MATCH rel_listed
#endif

/* observers */
bool running;			/* fn is running */
byte ran;
bool event;			/* -DABA: the user's signal to A's fn */

#ifdef STAMP
#define CLEAR_STAMP cb_stamp = 0;
#else
#define CLEAR_STAMP
#endif

inline touch_src()
{
	assert(!src_dead)
}

/* library access to cb on behalf of the first registration */
inline touch_cb()
{
	assert(!cb_freed && cb_inc == 0)
}

inline lock_src()
{
	touch_src();
	atomic { lk == 0 -> lk = 1 }
}

inline unlock_src()
{
	touch_src();
	lk = 0
}

inline lock_g()
{
	atomic { gmu == 0 -> gmu = 1 }
}

inline unlock_g()
{
	gmu = 0
}

/* pthread_cond_wait(&graph_cv, &graph_mu): unlock and join atomically,
 * wait for a broadcast, relock (broadcast is the only wake-up used) */
inline cond_wait_g(e)
{
	atomic { e = bcast; gmu = 0 };
	(bcast != e);
	lock_g()
}

/* released_add: under graph_mu */
inline released_add()
{
	lock_g();
	d_step {
		fr_relcb = true;
		rel_listed = true;
		rel_owner = _pid;
#ifdef STAMP
		stamps++;
		fr_stamp = stamps;
		cb_stamp = stamps;
#endif
		rel_count++
	};
	unlock_g()
}

/* cancel__released_done: the canceller, after fn returned */
inline released_done()
{
	lock_g();
	d_step {
		assert(rel_listed);
		rel_listed = false;
		rel_owner = NONE;
		fr_relcb = false;
		rel_count--;
		bcast++
	};
	unlock_g()
}

/* released_running(cb, wait): true if it is running and we did not wait.
 * The entry names cb's address only; cancel__frame_is_mine(f) is
 * rel_owner == _pid (the frame is followed, not the source). */
inline released_running(wait, res, e)
{
	res = false;
	if
	:: rel_count == 0
	:: else ->
		lock_g();
		do
		:: !REL_MATCH -> break
		:: REL_MATCH && (!wait || rel_owner == _pid) ->
			res = true;
			break
		:: REL_MATCH && wait && rel_owner != _pid ->
			cond_wait_g(e)
		od;
		unlock_g()
	fi
}

/*
 * cancel_callback_unregister(cb). mine: this is the canceller's thread.
 * Accesses to cb here are on behalf of the first registration unless the
 * user re-registered it (then cb_inc is 1 and nothing of A is involved).
 */
inline do_unregister(res, e, s, removed)
{
	if
	:: cb_inc == 0 -> touch_cb()
	:: else
	fi;
	s = cbsrc;		/* acquire load of src_ */
	removed = false;
	if
	:: !s ->
		if
		:: cbst == C_DONE ->
			released_running(true, res, e)
		:: cbst == C_ON_NONE ->
			/* try_unregister_detached */
			cbst = C_REMOVED;
			removed = true
		:: else
		fi
	:: s ->
		lock_src();
		do
		:: true ->
			touch_cb();	/* remove_locked reads state_ */
			if
			:: cbst == C_REGISTERED ->
				/* REMOVED */
				d_step {
					listed = false;
					cbst = C_REMOVED;
					cbsrc = false
				};
				removed = true;
				break
			:: cbst != C_REGISTERED && cur == CB &&
			    runner == _pid ->
				/* RUNNING_MINE: release cb to fn */
				fr_released = true;
				touch_cb();
				cbst = C_DONE;
#ifdef BROKEN_CLEAR_FIRST
				touch_cb();
				cbsrc = false;
				released_add();
#else
				released_add();
				/* release store: whoever sees NULL finds
				 * the frame on the list */
				touch_cb();
				cbsrc = false;
#endif
				break
			:: cbst != C_REGISTERED && cur == CB &&
			    runner != _pid ->
				/* RUNNING_OTHER: park until current_ moves */
				touch_src();
				atomic { wflag = true; e = gen };
				unlock_src();
				(gen != e);
				lock_src()
			:: cbst != C_REGISTERED && cur != CB ->
				/* NOT_THERE */
				break
			fi
		od;
		touch_cb();	/* reads state_ for KEEP_SRC */
		unlock_src()
	fi;
	res = removed
}

proctype Canceller()
{
	bool res;
	bool s;
	bool removed;
	byte e;

	/* cancel__begin's CAS, then run_list */
	touch_src();
	st = st | CANCELED;
	lock_src();
	runner = _pid;
	if
	:: !listed
	:: listed ->
		touch_cb();
		d_step {
			listed = false;
			cbst = C_DONE;	/* at the pop: cur tells running */
			cur = CB;
			fr_released = false;
			fr_relcb = false
		};
		unlock_src();

		/* fn */
		d_step { assert(ran == 0); ran++; running = true };
		do_unregister(res, e, s, removed);
		assert(!res);
		assert(cbsrc == false && cbst == C_DONE);
#ifdef FREE
		cb_freed = true;
#ifdef ABA
		(event);	/* waits for the user */
#endif
#else
		/* again: src_ is NULL, the frame is ours: false at once */
		do_unregister(res, e, s, removed);
		assert(!res);
#endif
		running = false;

		if
		:: fr_relcb -> released_done()
		:: else
		fi;
#ifdef BROKEN_TOUCH_CB
		/* still marks cb done after fn returned */
		touch_cb();
		cbst = C_DONE;
#endif
		lock_src();
		cur = NONE;
		if
		:: !fr_released ->
			touch_cb();
			cbsrc = false	/* release store; DONE since the pop */
		:: else
		fi;
		if
		:: wflag ->
			atomic { wflag = false; gen++ };
			unlock_src();	/* unpark_all(gen) */
			lock_src()
		:: else
		fi
	fi;
	runner = NONE;
	unlock_src();
	touch_src();
	st = st | DONE
}

bool wdone;			/* the Worker returned (joined) */

#ifndef FREE
proctype Worker()
{
	bool res;
	bool s;
	bool removed;
	byte e;

	do_unregister(res, e, s, removed);
	/* on another thread than fn's: fn is not running, never runs */
	assert(!running);
	assert(!res || ran == 0);
	wdone = true
}
#endif

/* cancel_source_destroy(A) by the user, then the memory goes: waits for
 * DONE; nothing may be busy (no node, no parked unregister) */
inline destroy_src()
{
	atomic {
		(st & DONE) && lk == 0 ->
		assert(!listed && !wflag && cur == NONE && runner == NONE);
		src_dead = true
	}
}

init {
	bool res;
	bool s;
	bool removed;
	byte e;
	byte rc;

	/* register cb on A */
	d_step {
		cbsrc = true;
		cbst = C_REGISTERED;
		listed = true
	};
	atomic {
		run Canceller();
#ifndef FREE
		run Worker()
#endif
	};

#ifdef FREE
	/* the user reuses cb's memory once fn freed it */
	(cb_freed);
#ifdef ABA
	/* registered on another source B and run there to completion:
	 * DONE, src_ cleared; A's fn still runs */
	d_step {
		cb_freed = false;
		cb_inc = 1;
		CLEAR_STAMP
		cbsrc = false;
		cbst = C_DONE
	};
#ifndef NO_TRY
	/* try_unregister: B's callback is not running: EALREADY */
	released_running(false, res, e);
	if
	:: res -> rc = R_EINPROGRESS
	:: else -> rc = R_EALREADY
	fi;
	assert(rc == R_EALREADY);
#endif
	/* waits for A's fn, which waits for us (-DNO_TRY: deadlock) */
	do_unregister(res, e, s, removed);
	assert(!res);
	event = true;
	destroy_src();
#else
	/* cancel_callback_register(cb, fn, arg, CANCEL_TOKEN_NONE) */
	d_step {
		cb_freed = false;
		cb_inc = 1;
		CLEAR_STAMP
		cbsrc = false;
		cbst = C_ON_NONE
	};
	destroy_src();
	do_unregister(res, e, s, removed);
	assert(res && cbst == C_REMOVED);
#endif
#else
	(wdone);	/* join the Worker */
	destroy_src();
	/* again, after A is gone: must not touch A */
	do_unregister(res, e, s, removed);
	assert(!res);
#endif
	(_nr_pr == 1);	/* quiescence */
	assert(!running && !rel_listed && rel_count == 0 && gmu == 0);
	assert(src_dead && st == (CANCELED | DONE))
}
