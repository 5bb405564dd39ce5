/*
 * queue.pml: loop delivery (src/queue.c, run_list in src/source.c).
 *
 * Callbacks registered through a queue sit in their source's list. The
 * canceller pops them under the source's lock (slock) and, still holding
 * it, moves each to the queue under the queue's lock (qlock): state
 * PENDING, src_ cleared, in the queue's list, all in one step
 * (cancel__queue_move; with -DTWO both callbacks move in one hold of
 * qlock). If the queue was empty it counts itself a signaler, and after
 * dropping both locks writes the fd, then under qlock uncounts itself and
 * drains the fd if the queue is empty by then (cancel__queue_signal).
 *
 * The runner (the loop thread, cancel_queue_run) pops a pending callback
 * under qlock (DONE, current), drains the fd if it emptied the queue and
 * no signaler is in flight, runs fn without the lock, then clears current
 * under qlock. It runs twice, at any moment.
 *
 * Each callback's owner unregisters it once, at any moment, then frees
 * it: reads src_; if set, under slock removes it if REGISTERED; if not
 * removed there, asks the queue under qlock: PENDING -> taken out (and
 * the fd drained as the runner does), removed; current -> waits for the
 * runner to clear current, asks again; otherwise not removed (it ran).
 *
 * Checked: nothing touches a callback after its owner freed it; removed
 * means it never runs, not removed means it already ran to the end;
 * after everyone is done, the fd is readable exactly while a callback is
 * pending; no deadlock (invalid end state).
 *
 * Broken variants:
 *   BROKEN_GAP: the cancel pops under slock, drops it, and appends under
 *     qlock only then (no current_ on the source): an unregister in the
 *     gap finds the callback in neither list, returns "ran", and the owner
 *     frees it before the append.
 *   BROKEN_NO_RECHECK: the signaler writes the fd and leaves, without
 *     looking whether the queue was emptied before its write: the fd
 *     stays readable with nothing queued (a level-triggered loop spins).
 */

#ifdef TWO
#define NCB 2
#else
#define NCB 1
#endif

#define REG 1
#define PENDING 2
#define DONE 3
#define REMOVED 4

bit slock;
bit qlock;
byte state[NCB];
bit in_src[NCB];
bit src_set[NCB];
bit in_q[NCB];
bit current[NCB];
bit freed[NCB];
byte ran[NCB];
byte pending;   /* callbacks in the queue */
byte signaling; /* writers between their push and their write */
bit readable;   /* the fd */
byte finished;  /* processes done */

inline lock(l)
{
	atomic { l == 0 -> l = 1 }
}

inline unlock(l)
{
	l = 0
}

inline touch(c)
{
	assert(!freed[c])
}

/* Under qlock: take c out of the queue; drain when empty. */
inline pending_unlink(c)
{
	touch(c);
	in_q[c] = 0;
	pending--;
	if
	:: pending == 0 && signaling == 0 -> readable = 0
	:: else
	fi
}

/* Under qlock (and slock): append c. */
inline append(c)
{
	touch(c);
	state[c] = PENDING;
	src_set[c] = 0;
	in_q[c] = 1;
	pending++
}

active proctype canceller()
{
	byte c;
	bit first = 0;
	lock(slock);
#ifdef BROKEN_GAP
	for (c : 0 .. NCB - 1) {
		if
		:: in_src[c] ->
			touch(c);
			in_src[c] = 0;
			state[c] = DONE;
			unlock(slock);
			lock(qlock);
			first = pending == 0;
			append(c);
			if
			:: first -> signaling++
			:: else
			fi;
			unlock(qlock);
			lock(slock)
		:: else
		fi
	}
	unlock(slock);
	if
	:: first -> skip
	:: else -> goto done
	fi;
#else
	lock(qlock);
	first = pending == 0;
	for (c : 0 .. NCB - 1) {
		if
		:: in_src[c] ->
			touch(c);
			in_src[c] = 0;
			append(c)
		:: else
		fi
	}
	/* Nothing moved: nothing to signal. */
	first = first && pending > 0;
	if
	:: first -> signaling++
	:: else
	fi;
	unlock(qlock);
	unlock(slock);
	if
	:: first -> skip
	:: else -> goto done
	fi;
#endif
	/* The write, with no lock held; only the queue is touched. */
	readable = 1;
	lock(qlock);
	signaling--;
#ifndef BROKEN_NO_RECHECK
	if
	:: signaling == 0 && pending == 0 -> readable = 0
	:: else
	fi;
#endif
	unlock(qlock);
done:
	finished++
}

active proctype runner()
{
	byte round, c;
	for (round : 1 .. 2) {
		lock(qlock);
		if
		:: in_q[0] -> c = 0
#ifdef TWO
		:: in_q[1] -> c = 1
#endif
		:: else -> unlock(qlock); goto next
		fi;
		pending_unlink(c);
		state[c] = DONE;
		current[c] = 1;
		unlock(qlock);
		touch(c); /* fn */
		ran[c]++;
		lock(qlock);
		current[c] = 0;
		unlock(qlock);
next:
		skip
	}
	finished++
}

proctype owner(byte c)
{
	bit removed = 0;
	if
	:: src_set[c] ->
		lock(slock);
		if
		:: state[c] == REG && in_src[c] ->
			in_src[c] = 0;
			state[c] = REMOVED;
			src_set[c] = 0;
			removed = 1
		:: else
		fi;
		unlock(slock)
	:: else
	fi;
	if
	:: !removed ->
		lock(qlock);
again:
		if
		:: state[c] == PENDING && in_q[c] ->
			pending_unlink(c);
			state[c] = REMOVED;
			removed = 1
		:: current[c] ->
			unlock(qlock);
			current[c] == 0;
			lock(qlock);
			goto again
		:: else
		fi;
		unlock(qlock)
	:: else
	fi;
	/* Removed: never runs. Not removed: ran to the end. */
	assert(removed || (ran[c] == 1 && !current[c]));
	assert(!removed || ran[c] == 0);
	freed[c] = 1;
	finished++
}

init
{
	byte c;
	atomic {
		for (c : 0 .. NCB - 1) {
			state[c] = REG;
			in_src[c] = 1;
			src_set[c] = 1;
			run owner(c)
		}
	}
	finished == NCB + 2;
	/* Everyone done: at most one run each; the fd readable exactly
	 * while something is pending. */
	for (c : 0 .. NCB - 1) {
		assert(ran[c] <= 1)
	}
	assert(readable == (pending > 0))
}
