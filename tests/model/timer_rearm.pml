/*
 * timer_rearm.pml: a lock-free push of an armed deadline racing the
 * library thread's claim of the same entry (src/libthread.c
 * rearm_later(), claim_due(), run_timers(), cancel__timer_arm()).
 *
 * The entry is armed at deadline OLD, which the clock has reached; the
 * re-arm pushes it to LATER, which it has not. Spin's interleavings are
 * sequentially consistent, which is what the C code asks of the four
 * accesses that matter (cas_seq/ld_seq there, st_seq/ld_seq here).
 *
 *   Timer (under w_mu): claim: DUE = 1, then read the deadline; reached
 *     -> on the due list; not reached -> DUE = 0, keep it. Later, under
 *     w_mu again: if still on the due list, pop it (deadline NEVER,
 *     DUE and IN_HEAP clear) and fire.
 *   Arm, fast path: not IN_HEAP, or DUE? -> slow. old = deadline (NEVER:
 *     no longer armed -> slow); CAS(old -> LATER) or slow; tflags_ no
 *     longer what it was (DUE set or IN_HEAP clear)? -> slow; else done,
 *     no lock.
 *   Arm, slow path (cancel__timer_arm under w_mu): take the entry off
 *     the due list if it is there, store LATER, IN_HEAP, DUE clear.
 *
 * Property: a fast push that returned success is never followed by a
 * fire at the old deadline (the fire would be early for the caller, who
 * saw its push succeed). A fire that the slow path lost the race to is
 * fine: that call overlapped the expiry.
 *
 * Broken variant: BROKEN_NO_RECHECK (the fast path does not look at DUE
 * after its CAS: the Timer read the old deadline just before the CAS and
 * fires after the push returned).
 */

#define NEVER 0
#define OLD 1
#define LATER 2

bit mu;
bool inheap = true;	/* tflags_ IN_HEAP */
bit due;		/* tflags_ DUE */
byte dl = OLD;
bool ondue;     /* on the due list (claimed, not yet popped) */
bool fired;     /* fired at the old deadline */
bool fast_ok;   /* the push returned by the fast path */

inline lock() { atomic { mu == 0 -> mu = 1 } }
inline unlock() { mu = 0 }

proctype Timer()
{
	byte d;
	lock();
	due = 1;
	d = dl;
	if
	:: d == OLD -> ondue = true
	:: else -> due = 0
	fi;
	unlock();
	/* run_timers: pop and fire, w_mu dropped around the cancel */
	lock();
	if
	:: ondue -> ondue = false; dl = NEVER;
	   atomic { due = 0; inheap = false };	/* one tflags_ store */
	   fired = (d == OLD)
	:: else -> skip
	fi;
	unlock()
}

proctype Arm()
{
	byte old;
	if
	:: due || !inheap -> goto slow
	:: else -> skip
	fi;
	old = dl;
	if
	:: old == NEVER -> goto slow	/* fired, or disarmed */
	:: else -> skip
	fi;
	atomic {
		if
		:: dl == old -> dl = LATER
		:: else -> goto slow
		fi
	}
#ifndef BROKEN_NO_RECHECK
	/* tflags_ still what it was: IN_HEAP, not DUE */
	if
	:: due || !inheap -> goto slow
	:: else -> skip
	fi;
#endif
	fast_ok = true;
	goto done;
slow:
	lock();
	if
	:: ondue -> ondue = false
	:: else -> skip
	fi;
	dl = LATER;
	due = 0;
	inheap = true;
	unlock();
done:
	skip
}

init
{
	atomic { run Timer(); run Arm() }
	(_nr_pr == 1);
	assert(!(fast_ok && fired));
	assert(mu == 0)
}
