/*
 * waiter.pml: parking on the source's state word (cancel_wait and the
 * other waits, cancel__begin/finish, destroy), futex style.
 *
 * The word (st) holds CANCELED, DONE, DWAIT and the waiter count; every
 * change is one atomic read-modify-write returning the old value. park(v)
 * sleeps only if the word still equals v (the futex compare, atomic with
 * going to sleep); unpark_all wakes every sleeper and never reads the word.
 *
 *   waiter:    s = enter() (count + 1, returns the new word); while s has
 *              no CANCELED: park(s), reload s; leave() (count - 1; if
 *              DWAIT was set and the count reaches 0, unpark_all).
 *              W1 waits without a deadline; W2's deadline may expire
 *              (before it parks or while parked).
 *   canceller: old = fetch_or(CANCELED); if it set it and old's count > 0:
 *              unpark_all. Then finish: old = fetch_or(DONE); if old has
 *              DWAIT: unpark_all. Nothing else touches the word after DONE.
 *   destroy:   (after its own cancel) while the word has CANCELED and
 *              not DONE, or waiters: CAS in DWAIT, park on that value.
 *              Then the storage is freed: any later access is an error.
 *
 * Two cancels race (C1 then destroys). C1's destroy starts after both
 * waiters entered and after C2's cancel made its read-modify-write (the
 * user's side of the contract: destroy must not race the start of another
 * call).
 *
 * Broken variant: BROKEN_COUNT_BEFORE (the canceller reads the count with
 * a separate load before setting CANCELED).
 */

#define NPID 8

#define CANCELED 1
#define DONE 2
#define DWAIT 4
#define WAITER 8
#define CNT(s) ((s) / WAITER)

#define ECANCELED 125
#define ETIMEDOUT 110
#define EBUSY 16

byte st;
bool parked[NPID];
bool freed;
byte entered;
bool c2_began;
byte nwon;

inline park(v)
{
	atomic {
		if
		:: st == v -> parked[_pid] = true
		:: else
		fi
	};
	!parked[_pid]
}

/* a timed park may also end by its deadline (sets to) */
inline park_timed(v, to)
{
	atomic {
		if
		:: st == v -> parked[_pid] = true
		:: else
		fi
	};
	if
	:: !parked[_pid]
	:: atomic { parked[_pid] -> parked[_pid] = false; to = true }
	fi
}

/* never reads the word: may run after free */
inline unpark_all()
{
	d_step {
		parked[0] = false;
		parked[1] = false;
		parked[2] = false;
		parked[3] = false;
		parked[4] = false;
		parked[5] = false;
		parked[6] = false;
		parked[7] = false
	}
}

/* timed: the deadline may expire while waiting */
proctype Waiter(bool timed)
{
	byte s;
	byte rc;
	bool to;

	d_step {
		assert(!freed);
		st = st + WAITER;
		s = st;
		entered++
	};
	do
	:: (s & CANCELED) ->
		rc = ECANCELED;
		break
	:: !(s & CANCELED) && to ->
		rc = ETIMEDOUT;		/* ECANCELED wins when both hold */
		break
	:: !(s & CANCELED) && !to ->
		if
		:: timed -> park_timed(s, to)
		:: else -> park(s)
		fi;
		d_step { assert(!freed); s = st }
	od;
	to = false;
	d_step {
		assert(!freed);
		assert(rc != ECANCELED || (st & CANCELED));
		s = st;
		st = st - WAITER
	};
	if
	:: (s & DWAIT) && CNT(s) == 1 -> unpark_all()
	:: else
	fi
}

inline cancel(won, old, mark)
{
#ifdef BROKEN_COUNT_BEFORE
	d_step { assert(!freed); old = st };
	d_step {
		assert(!freed);
		if
		:: (st & CANCELED) -> won = false
		:: else -> st = st | CANCELED; won = true
		fi;
		c2_began = c2_began || mark
	};
#else
	d_step {
		assert(!freed);
		old = st;
		if
		:: (st & CANCELED) -> won = false
		:: else -> st = st | CANCELED; won = true
		fi;
		c2_began = c2_began || mark
	};
#endif
	if
	:: won && CNT(old) > 0 -> unpark_all()
	:: else
	fi;
	if
	:: won ->
		nwon++;
		/* finish: no callbacks here; publish DONE */
		d_step {
			assert(!freed);
			old = st;
			st = st | DONE
		};
		if
		:: (old & DWAIT) -> unpark_all()
		:: else
		fi
	:: else
	fi
}

proctype Canceller2()
{
	bool won;
	byte old;

	cancel(won, old, true)
}

proctype Canceller1()
{
	bool won;
	byte old;
	byte s;
	byte rc;

	cancel(won, old, false);
	(entered == 2 && c2_began);
	/* destroy */
	do
	:: d_step { assert(!freed); s = st };
		if
		:: !(s & CANCELED) && CNT(s) > 0 ->
			rc = EBUSY;
			break
		:: (s & CANCELED) && (!(s & DONE) || CNT(s) > 0) ->
			atomic {
				assert(!freed);
				if
				:: st == s -> st = s | DWAIT; s = s | DWAIT
				:: else -> s = 255	/* CAS failed: retry */
				fi
			};
			if
			:: s != 255 -> park(s)
			:: else
			fi
		:: else ->
			d_step {
				assert((s & DONE) && CNT(s) == 0);
				freed = true;
				rc = 0
			};
			break
		fi
	od;
	assert(rc == 0)
}

init {
	atomic {
		run Waiter(false);
		run Canceller2();
		run Waiter(true);
		run Canceller1()
	};
	(_nr_pr == 1);
	assert(freed && nwon == 1)
}
