/*
 * cancel_wait, cancel_sleep, cancel_sleep_until: park on the source's
 * state word until CANCELED appears in it or the deadline passes.
 *
 * The waiter counts itself in the state word (cancel__waiter_enter) before
 * its first check; cancel__begin sets CANCELED with one CAS on the same
 * word and wakes the word only if that CAS saw a nonzero count. Both are
 * read-modify-writes of one word, so either the canceller sees our count
 * (and wakes us after its CAS: our park, which compares the word with the
 * value we last loaded, returns at once or is woken) or our enter sees
 * CANCELED. Every park result is rechecked by reloading the word.
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <pthread.h>

/* Sleep until @dl (not CANCEL_NEVER) on CLOCK_MONOTONIC, restarting on
 * EINTR with the same absolute time. */
static void
plain_sleep_until(uint64_t dl)
{
	struct timespec ts = cancel__ns_to_ts(dl);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

/* ECANCELED or ETIMEDOUT: wait on @src until canceled or @dl. */
static int
wait_source(struct cancel_source *src, uint64_t dl)
{
	/* Acquire pairs with cancel__begin's CAS: the reason is visible. */
	if (ld_acquire(&src->state_) & CANCEL__S_CANCELED)
		return ECANCELED;
	if (dl != CANCEL_NEVER && cancel__now_ns() >= dl)
		return ETIMEDOUT; /* check once, do not block */
	int rc;
	bool timed_out = false;
	/* The clock was just read above: the first round skips it (the
	 * timed park itself returns ETIMEDOUT if the deadline passes). A
	 * cancel's wake-up is seen before any clock read. */
	bool recheck = false;
	bool tried_watch = false;
	uint64_t s = cancel__waiter_enter(src);
	for (;;) {
		if (s & CANCEL__S_CANCELED) {
			rc = ECANCELED;
			break;
		}
		if (timed_out || (recheck && dl != CANCEL_NEVER &&
		                  cancel__now_ns() >= dl)) {
			rc = ETIMEDOUT;
			break;
		}
		recheck = true;
		if ((s & CANCEL__S_WATCHED) && !tried_watch) {
			/* Watch the hang-up on this thread (watch.c): one
			 * wake-up instead of two. Once per wait. */
			tried_watch = true;
			if (cancel__watch_wait(src, dl)) {
				/* Acquire pairs with cancel__begin's CAS. */
				s = ld_acquire(&src->state_);
				continue;
			}
		}
		if (cancel__park(cancel__state_word(src), (uint32_t)s, dl) ==
		    ETIMEDOUT)
			timed_out = true;
		/* Acquire pairs with cancel__begin's CAS (the park's wake
		 * carries no data). */
		s = ld_acquire(&src->state_);
	}
	cancel__waiter_leave(src);
	return rc;
}

/* The common body: ECANCELED, ETIMEDOUT or EINVAL. */
static int
wait_until(uint64_t dl, cancel_token tok)
{
	if (tok.src_ == NULL) {
		if (dl == CANCEL_NEVER)
			return EINVAL;
		plain_sleep_until(dl);
		return ETIMEDOUT;
	}
	return wait_source(tok.src_, dl);
}

static int
blocking_call(uint64_t dl, cancel_token tok, bool sleep)
{
	/* Not a cancellation point while we are counted as a waiter. */
	int cstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cstate);
	int rc = wait_until(dl, tok);
	pthread_setcancelstate(cstate, NULL);
	if (sleep && rc == ETIMEDOUT)
		rc = 0;
	return rc;
}

/* cancel_wait and cancel_sleep_until: an absolute @deadline or NULL. */
static int
until_deadline(const struct timespec *deadline, cancel_token tok, bool sleep)
{
	CANCEL_ERRNO_SAVE();
	uint64_t dl;
	int rc = cancel__deadline_ns(deadline, &dl);
	if (rc == 0)
		rc = blocking_call(dl, tok, sleep);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

int
cancel_wait(const struct timespec *deadline, cancel_token tok)
{
	return until_deadline(deadline, tok, false);
}

int
cancel_sleep_until(const struct timespec *deadline, cancel_token tok)
{
	return until_deadline(deadline, tok, true);
}

int
cancel_sleep(uint64_t ns, cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	uint64_t dl = CANCEL_NEVER;
	if (ns != CANCEL_NEVER) {
		dl = cancel__add_sat(cancel__now_ns(), ns);
		if (dl == CANCEL_NEVER)
			dl--; /* saturated, but still a deadline */
	}
	int rc = blocking_call(dl, tok, true);
	CANCEL_ERRNO_RESTORE();
	return rc;
}
