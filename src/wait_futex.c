/*
 * Linux futex backend of wait.h: waiters park directly on the state word.
 *
 * The timed wait is FUTEX_WAIT_BITSET with an absolute CLOCK_MONOTONIC
 * timeout, so a wait interrupted by a signal (EINTR) is simply restarted
 * by the caller's loop with the same deadline: nothing to recompute.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

const bool cancel__unpark_signal_safe = true;
const char cancel__backend_name[] = "futex";

int
cancel__park(uint32_t *word, uint32_t expected, uint64_t deadline_ns)
{
	int saved = errno;
	struct timespec ts;
	struct timespec *tsp = NULL;
	if (deadline_ns != CANCEL_NEVER) {
		ts = cancel__ns_to_ts(deadline_ns);
		tsp = &ts;
	}
	/*
	 * The kernel compares *word with @expected under its hash-bucket
	 * lock, so a cancel__unpark_all() that follows a change of *word
	 * either finds us queued or we see the new value (EAGAIN).
	 */
	int rc = 0;
	int op = FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG;
	long r = syscall(SYS_futex, word, op, expected, tsp, NULL,
	                 FUTEX_BITSET_MATCH_ANY);
	if (r == -1 && errno == ETIMEDOUT)
		rc = ETIMEDOUT;
	/* EAGAIN (value differed), EINTR, wake-up: 0, the caller rechecks. */
	errno = saved;
	return rc;
}

void
cancel__unpark_all(uint32_t *word)
{
	int saved = errno;
	/* A private FUTEX_WAKE hashes the address only: it never reads the
	 * word, so @word may already be freed (see wait.h). */
	syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT_MAX,
	        NULL, NULL, 0);
	errno = saved;
}
