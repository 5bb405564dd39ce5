/*
 * timer.pml: a deadline firing while its source is destroyed
 * (src/libthread.c run_timers, cancel__timer_disarm; src/source.c
 * cancel_source_destroy, teardown, run_list).
 *
 * Source S is armed (on the wheel, T_SEEN set) and has one callback cb.
 * w_mu is the wheel's spin lock (it guards the wheel and `firing`, and
 * its holder never blocks); lt_mu a mutex and lt_cv a condvar (cond_wait
 * = unlock and join the wait set atomically, leave it on a broadcast,
 * relock), used only to wait for a firing.
 *
 *   Timer (the library thread): lock w_mu; if S is on the wheel (due):
 *     remove it, firing = S, unlock; cancel_with(S, ETIMEDOUT) (the CAS,
 *     then run_list: pop cb, run fn, mark it done, set DONE); lock w_mu,
 *     firing = NULL, note whether a disarm waits (firing_waiters), unlock;
 *     if one does: lock lt_mu, broadcast, unlock. After the cancel it only
 *     compares S's address.
 *   User: unregister(cb) (removes it, or waits while fn runs: the gen_
 *     park of callback.pml, abstracted to "until fn returned"), then
 *     destroy(S): word 0 -> disarm, return; else CANCELED and not DONE ->
 *     wait for DONE (DWAIT + park); teardown (lock, busy check, unlock),
 *     disarm, close the fd. Then S is freed.
 *   disarm: tflags_ SEEN? lock w_mu, take S off the wheel if there; if
 *     firing == S and not on the library thread: firing_waiters++, unlock
 *     w_mu, lock lt_mu, and while (firing == S, read under w_mu)
 *     cond_wait; unlock lt_mu; firing_waiters-- under w_mu.
 *
 * -DSELF: no User; cb's fn destroys S itself (on the library thread, from
 * inside the firing) and frees it. destroy sees its own run frame: no
 * wait for DONE, teardown marks the frame "source destroyed", and disarm
 * must not wait for the firing it runs in.
 *
 * Properties: every access to S asserts it is not freed; fn runs at most
 * once and never after destroy returned; no deadlock; at the end S is
 * freed, lt_mu free, firing none.
 *
 * Broken variants: BROKEN_NO_WAIT (disarm does not wait for the firing in
 * progress: the Timer's CAS touches freed S); BROKEN_WAIT_SELF with SELF
 * (disarm waits even on the library thread: it waits for itself);
 * BROKEN_BCAST_UNLOCKED (the Timer broadcasts without lt_mu: it can land
 * between the disarm's look at `firing` and its cond_wait, which then
 * sleeps for ever).
 */

#define CANCELED 1
#define DONE 2
#define DWAIT 4

#define CB_REG 1
#define CB_RUNNING 2
#define CB_DONE 3
#define CB_REMOVED 4

#define TIMER 1	/* the library thread's _pid */

/* library thread */
bit ltmu;
bit wmu;		/* w_mu */
bool cvwait;		/* the User waits on lt_cv */
bool firing;		/* firing == S (under w_mu) */
byte fwait;		/* firing_waiters (under w_mu) */

/* S */
bool inheap = true;
bool seen = true;
byte sst;
bit slk;
byte cbst = CB_REG;
bool sfreed;
bool sparked;

/* ghosts */
byte ran;
bool destroy_returned;

inline touch()
{
	atomic { assert(!sfreed) }
}

inline slock()
{
	atomic { assert(!sfreed); slk == 0 -> assert(!sfreed); slk = 1 }
}

inline sunlock()
{
	d_step { assert(!sfreed); slk = 0 }
}

inline ltlock()
{
	atomic { ltmu == 0 -> ltmu = 1 }
}

inline ltunlock()
{
	ltmu = 0
}

inline wlock()
{
	atomic { wmu == 0 -> wmu = 1 }
}

inline wunlock()
{
	wmu = 0
}

/* cancel__timer_disarm(S) */
inline disarm()
{
	atomic { assert(!sfreed); if :: !seen -> goto disarmed :: else fi };
	wlock();
	d_step { assert(!sfreed); inheap = false };	/* disarm_locked */
#ifndef BROKEN_NO_WAIT
	if
#ifdef BROKEN_WAIT_SELF
	:: firing ->
#else
	:: firing && _pid != TIMER ->
#endif
		fwait++;
		wunlock();
		ltlock();
		do
		:: wlock();
			still = firing;
			wunlock();
			if
			:: still ->
				atomic { ltmu = 0; cvwait = true };
				!cvwait;
				ltlock()
			:: else -> break
			fi
		od;
		ltunlock();
		wlock();
		fwait--
	:: else
	fi;
#endif
	wunlock();
disarmed:
	skip
}

/* destroy(S) from fn, on the Timer: its own frame runs S's list */
inline destroy_self()
{
	touch();	/* word: CANCELED, not DONE, runner_ is ours */
	/* no waiters; teardown(frame) */
	slock();
	d_step {
		assert(slk && cbst == CB_RUNNING);
		cbst = CB_DONE;		/* complete the running cb */
		destroyed_in_fn = true
	};
	sunlock();
	disarm();
	touch();	/* fd close */
	d_step { destroy_returned = true; sfreed = true }
}

proctype Timer()
{
	bool won;
	bool destroyed_in_fn;
	bool still;
	bool wake;
	byte old;

	wlock();
	if
	:: inheap ->
		d_step { assert(!sfreed); inheap = false };
		firing = true;
		wunlock();
		/* cancel_source_cancel_with(S, ETIMEDOUT): begin */
		d_step {
			assert(!sfreed);
			if
			:: (sst & CANCELED) -> won = false
			:: else -> sst = sst | CANCELED; won = true
			fi
		};
		if
		:: won ->
			/* run_list(S) */
			slock();
			if
			:: cbst == CB_REG ->
				cbst = CB_RUNNING;
				sunlock();
				/* fn */
				d_step {
					assert(!destroy_returned);
					ran++
				};
#ifdef SELF
				destroy_self();
#endif
				if
				:: destroyed_in_fn -> goto fired
				:: else
				fi;
				slock();
				cbst = CB_DONE	/* unregister waiters go */
			:: else
			fi;
			/* list empty */
			sunlock();
			d_step {
				assert(!sfreed);
				old = sst;
				sst = sst | DONE
			};
			if
			:: (old & DWAIT) -> sparked = false
			:: else
			fi
		:: else
		fi;
fired:
		/* S may be freed: only its address is compared now */
		wlock();
		firing = false;
		wake = fwait > 0;
		wunlock();
		if
		:: wake ->
#ifndef BROKEN_BCAST_UNLOCKED
			ltlock();
			cvwait = false;	/* broadcast */
			ltunlock()
#else
			cvwait = false
#endif
		:: else
		fi
	:: else ->
		wunlock()
	fi
}

#ifndef SELF
proctype User()
{
	byte s;
	bool still;

	/* unregister(cb) */
	slock();
	if
	:: cbst == CB_REG -> cbst = CB_REMOVED; sunlock()
	:: cbst == CB_RUNNING ->
		sunlock();
		(cbst != CB_RUNNING)	/* park on gen_ until fn returned */
	:: else -> sunlock()
	fi;
	/* destroy(S) */
	d_step { assert(!sfreed); s = sst };
	if
	:: s == 0 ->
		touch()	/* head_, children_, nlinks_: all clear */
	:: else ->
		/* CANCELED (by the Timer): its frame, not ours */
		do
		:: (s & DONE) -> break
		:: !(s & DONE) && !(s & DWAIT) ->
			d_step { assert(!sfreed); sst = sst | DWAIT; s = sst }
		:: !(s & DONE) && (s & DWAIT) ->
			atomic {
				assert(!sfreed);
				if
				:: sst == s -> sparked = true
				:: else
				fi
			};
			!sparked;
			d_step { assert(!sfreed); s = sst }
		od;
		/* teardown */
		slock();
		d_step { assert(cbst != CB_REG && cbst != CB_RUNNING) };
		sunlock()
	fi;
	disarm();
	touch();	/* fd close */
	d_step { destroy_returned = true; sfreed = true }
}
#endif

init {
	atomic {
		run Timer();
#ifndef SELF
		run User()
#endif
	};
	(_nr_pr == 1);
	assert(sfreed && destroy_returned && ran <= 1);
	assert(ltmu == 0 && wmu == 0 && fwait == 0 && !firing && !inheap)
}
