/*
 * callback_limit_cross_unregister.pml: a limitation of the contract, not
 * of the implementation. Sources A and B are canceled at once on two
 * threads; A's callback unregisters B's callback and B's unregisters A's.
 * unregister must wait for a callback running on another thread (SPEC), so
 * when both run at the same time each waits for the other: deadlock (.NET
 * documents the same "by design"). Expected to FAIL (invalid end state);
 * with -DTRY (try_unregister, which never waits) it verifies.
 *
 * -DCYCLE_BREAK models what src/callback.c does: before parking, an
 * unregister consults a wait-for graph (under one global mutex: one atomic
 * step here) and returns false without waiting if its wait would close a
 * cycle. That verifies (no deadlock), at the price of one unregister
 * returning while the other callback still runs.
 *
 * The callback list is abstracted as in condwait.pml (callback.pml checks
 * it): REGISTERED, RUNNING, DONE, REMOVED; unregister waits while RUNNING.
 */

#define C_REGISTERED 1
#define C_RUNNING 2
#define C_DONE 3
#define C_REMOVED 4

byte cbs[2] = C_REGISTERED;	/* cbs[0] on source A, cbs[1] on B */
byte ran[2];
bool waits[2];			/* canceller s is parked in unregister */

/* canceller of source s: runs callback s, which unregisters the other */
proctype Canceller(byte s)
{
	atomic {
		if
		:: cbs[s] == C_REGISTERED -> cbs[s] = C_RUNNING
		:: else -> goto out
		fi
	};
	ran[s]++;
	/* fn: unregister the other source's callback */
	atomic {
		if
		:: cbs[1 - s] == C_REGISTERED -> cbs[1 - s] = C_REMOVED
		:: else
		fi
	};
#if defined(CYCLE_BREAK)
	atomic {
		if
		:: cbs[1 - s] == C_RUNNING && !waits[1 - s] -> waits[s] = true
		:: else
		fi
	};
	(cbs[1 - s] != C_RUNNING || !waits[s]);
	waits[s] = false;
#elif !defined(TRY)
	(cbs[1 - s] != C_RUNNING);	/* wait for it to return */
#endif
	cbs[s] = C_DONE;
out:
	assert(ran[s] <= 1)
}

init {
	atomic {
		run Canceller(0);
		run Canceller(1)
	}
}
