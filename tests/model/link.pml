/*
 * link.pml: a linked child destroyed while its parent is being canceled
 * (src/link.c link_fire, cancel__unlink_parents; src/source.c
 * cancel__begin, cancel__propagate, run_list, drain_queue,
 * cancel_source_destroy, teardown).
 *
 * Parent P has one callback: the link of child C (C has no callbacks of
 * its own). The Canceller cancels P; its run loop pops the link and runs
 * link_fire, which wins C's CAS and then runs C's list inline, or (with
 * -DQUEUED: nesting at CANCEL_LINK_INLINE_DEPTH) marks C's runner_ "queued
 * on my thread" and queues C for the outermost finish, which drains the
 * queue after P's run loop. The Destroyer destroys C and then frees it.
 *
 *   destroy fast path (C's word 0): unlink (unregister the link from P:
 *     REMOVED, or wait on P's gen_ while the link runs on the Canceller,
 *     or NOT_THERE; then P's children_ - 1), reload the word: still 0 ->
 *     return. Else the slow path below.
 *   slow path: if CANCELED and not DONE and runner_ not ours: wait for
 *     DONE (DWAIT + park on the word). teardown: lock, busy check, unlock,
 *     unlink (no-op if done), then again "CANCELED, not DONE, not mine:
 *     wait for DONE".
 *
 * -DFD: C's word starts with the FD bit (a poller made an fd), so the
 * fast path is skipped and only teardown's second check can catch a
 * finish queued during the unlink.
 *
 * -DSELF: no Destroyer; P has a second callback, registered before the
 * link (so it runs after it), that destroys C on the Canceller's own
 * thread: C is DONE (inline), or (QUEUED) its runner_ is this thread's
 * "queued" marker, which destroy takes as its own: no wait, teardown
 * dequeues C. BROKEN_NO_DEQUEUE (with SELF, QUEUED): teardown leaves C in
 * the queue, and the drain touches freed C.
 *
 * -DJOIN: P has a second callback, registered before the link, that waits
 * for the Destroyer's destroy(C) to return (a callback joining a worker
 * that destroys its own linked source). Inline this verifies; with QUEUED
 * (link_flaw_queued_join.pml) destroy waits for C's DONE, which only the
 * outermost finish's drain sets, after that very callback: deadlock. A
 * flaw of the deferral, expected to FAIL. -DDRAIN_EACH models a partial
 * fix: the outermost run loop (here P's) drains the queue after each
 * callback returns, not only after its whole list.
 *
 * Every access to C asserts it is not freed. BROKEN_NO_WAIT: after the
 * unlink destroy neither reloads the word (fast path) nor waits for DONE
 * (teardown): the fix undone. With -DQUEUED the Canceller's drain then
 * touches freed C.
 */

#define CANCELED 1
#define DONE 2
#define DWAIT 4
#define FDBIT 8

#define GEN_WAIT 8	/* gen_ is 0..7 plus the wait bit */

/* link (callback) states */
#define L_REG 1
#define L_RUNNING 2
#define L_DONE 3
#define L_REMOVED 4

/* C's runner_ */
#define R_NONE 0
#define R_FRAME 1	/* the Canceller's run frame for C */
#define R_QUEUED 2	/* the Canceller's "queued" marker */

/* P */
bit plk;
byte lstate = L_REG;
bool pcur;		/* current_ == link */
byte pgen;
byte children = 1;
bool pdone;

/* C */
byte cst;
bit clk;
byte crunner;
bool cfreed;

bool parked[4];

/* ghosts */
bool c_began;		/* link_fire won C's CAS */
bool removed;		/* the unlink found the link still registered */
bool link_ran;
bool destroyed;

inline plock()
{
	atomic { plk == 0 -> plk = 1 }
}

inline punlock()
{
	plk = 0
}

inline clock()
{
	assert(!cfreed);
	atomic { clk == 0 -> assert(!cfreed); clk = 1 }
}

inline cunlock()
{
	d_step { assert(!cfreed); clk = 0 }
}

/* run_list(C): C has no callbacks; publish DONE */
inline run_list_c(old)
{
	clock();
	d_step { assert(!cfreed); crunner = R_FRAME };
	d_step { assert(!cfreed); crunner = R_NONE };
	cunlock();
	d_step {
		assert(!cfreed);
		old = cst;
		cst = cst | DONE
	};
	if
	:: (old & DWAIT) -> parked[2] = false	/* unpark_all: no read */
	:: else
	fi
}

/* cancel__unlink_parents(C) through cancel_callback_unregister(link) */
inline unlink(linked, g)
{
	if
	:: linked ->
		plock();
		do
		:: lstate == L_REG ->
			lstate = L_REMOVED;
			removed = true;
			break
		:: lstate != L_REG && pcur ->
			/* RUNNING_OTHER: park on gen_ */
			g = pgen | GEN_WAIT;
			pgen = g;
			punlock();
			atomic {
				if
				:: pgen == g -> parked[2] = true
				:: else
				fi
			};
			!parked[2];
			plock()
		:: lstate != L_REG && !pcur -> break	/* NOT_THERE */
		od;
		children--;
		punlock();
		linked = false
	:: else
	fi
}

/* wait_state(C, pred_done) */
inline wait_done(s)
{
	do
	:: atomic { assert(!cfreed); s = cst };
		if
		:: (s & DONE) -> break
		:: !(s & DONE) && !(s & DWAIT) ->
			d_step { assert(!cfreed); cst = cst | DWAIT }
		:: !(s & DONE) && (s & DWAIT) ->
			atomic {
				assert(!cfreed);
				if
				:: cst == s -> parked[2] = true
				:: else
				fi
			};
			!parked[2]
		fi
	od
}

#ifdef SELF
/*
 * destroy(C) from P's next callback, on the Canceller: C is canceled and
 * DONE (inline), or its finish sits in this thread's queue (runner_ is
 * our "queued" marker: ours, no wait; teardown dequeues it).
 */
inline destroy_self(s, g, linked)
{
	bool mine_q;

	d_step { assert(!cfreed); s = cst; mine_q = (crunner == R_QUEUED) };
	assert((s & CANCELED) && ((s & DONE) != 0) == !mine_q);
	/* teardown(src, NULL, queued = mine_q) */
	clock();
	atomic { assert(!cfreed) };	/* busy_locked: not busy */
	cunlock();
#ifndef BROKEN_NO_DEQUEUE
	if
	:: mine_q ->
		atomic { assert(!cfreed) };	/* dequeue: unlink from qhead */
		queued = false
	:: else
	fi;
#endif
	unlink(linked, g);
	d_step { assert(!cfreed); s = cst };	/* not DONE: ours, dequeue */
	atomic { assert(!cfreed) };	/* disarm, fd close */
	d_step {
		assert(!linked && clk == 0);
		destroyed = true;
		cfreed = true
	}
}
#endif

inline drain(old, queued)
{
	if
	:: queued ->
		atomic { assert(!cfreed) };	/* qhead = C->next_deferred_ */
		atomic { assert(!cfreed) };	/* C->next_deferred_ = NULL */
		queued = false;
		run_list_c(old)
	:: else
	fi
}

proctype Canceller()
{
	byte old;
	bool won;
	bool queued;
#ifdef SELF
	byte g;
	bool linked = true;
#endif

	/* cancel_source_cancel(P): begin (no waiters), finish: run_list */
	plock();
	if
	:: lstate == L_REG ->
		lstate = L_RUNNING;
		pcur = true;
		punlock();
		/* link_fire(C): begin(C, reason, false) */
		d_step {
			assert(!cfreed);
			old = cst;
			if
			:: (cst & CANCELED) -> won = false
			:: else -> cst = cst | CANCELED; won = true;
				c_began = true
			fi
		};
		link_ran = true;
		if
		:: won && (old & FDBIT) ->
			atomic { assert(!cfreed) }	/* fd_signal */
		:: else
		fi;
		if
		:: won ->
#ifdef QUEUED
			/* cancel__propagate, deep: queue on this thread */
			d_step { assert(!cfreed); crunner = R_QUEUED };
			atomic { assert(!cfreed) };	/* next_deferred_ = NULL */
			queued = true
#else
			run_list_c(old)
#endif
		:: else
		fi;
		/* back in P's run loop */
		plock();
		pcur = false;
		lstate = L_DONE;	/* KEEP_SRC: src_ stays P */
		if
		:: (pgen & GEN_WAIT) ->
			pgen = (pgen + 1) & (GEN_WAIT - 1);
			punlock();
			parked[2] = false;	/* unpark_all(&P->gen_) */
			plock()
		:: else
		fi;
#ifdef SELF
		/* P's next callback (registered before the link) */
		punlock();
		destroy_self(old, g, linked);
		plock();
#endif
		skip
	:: else
	fi;
#ifdef JOIN
	/* P's next callback (registered before the link) waits for the
	 * Destroyer's destroy(C) to return (joins it) */
	punlock();
#ifdef DRAIN_EACH
	drain(old, queued);
#endif
	(destroyed);
	plock();
#endif
	/* list empty */
	punlock();
	pdone = true;
	/* outermost finish: drain_queue */
	drain(old, queued)
}

#ifndef SELF
proctype Destroyer()
{
	byte s;
	byte g;
	bool linked = true;

	d_step { assert(!cfreed); s = cst };
	if
	:: s == 0 ->
		/* head_ NULL, children_ 0; nlinks_ 1 */
		unlink(linked, g);
#ifndef BROKEN_NO_WAIT
		d_step { assert(!cfreed); s = cst }
#endif
	:: else
	fi;
	if
	:: s == 0 -> skip	/* disarm (never armed), return 0 */
	:: else ->
		/* C's runner_ is never ours: not queued here, no frame */
		if
		:: (s & CANCELED) && !(s & DONE) -> wait_done(s)
		:: else
		fi;
		/* no waiters: pred_no_waiters holds at once */
		/* teardown */
		clock();
		atomic { assert(!cfreed) };	/* busy_locked: not busy */
		cunlock();
		unlink(linked, g);
#ifndef BROKEN_NO_WAIT
		d_step { assert(!cfreed); s = cst };
		if
		:: (s & CANCELED) && !(s & DONE) ->
			wait_done(s)	/* runner_ not ours */
		:: else
		fi;
#endif
		atomic { assert(!cfreed) }	/* disarm, fd close */
	fi;
	d_step {
		assert(!linked && clk == 0);
		destroyed = true;
		cfreed = true
	}
}

#endif

init {
	atomic {
#ifdef FD
		cst = FDBIT;
#endif
		run Canceller();
#ifndef SELF
		run Destroyer()
#endif
	};
	(_nr_pr == 1);
	/* C canceled exactly when P's run loop reached the link first */
	assert(c_began == link_ran);
	assert(link_ran == !removed);
	assert(destroyed && children == 0 && plk == 0 && pdone);
	assert(lstate == L_DONE || lstate == L_REMOVED)
}
