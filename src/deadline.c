/*
 * The monotonic clock and the timespec <-> nanosecond helpers. Every
 * conversion saturates at CANCEL_NEVER, so no deadline arithmetic in the
 * library can overflow. A caller's deadline, though, is never turned into
 * "none": cancel__deadline_ns() stops one short of CANCEL_NEVER.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <time.h>

#define NS_PER_SEC 1000000000ull

/* The largest value a (signed) time_t holds, whatever its width. */
#define TIME_T_MAX \
	((time_t)((((uint64_t)1) << (sizeof(time_t) * CHAR_BIT - 1)) - 1))

uint64_t
cancel__now_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer; no errno use. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return cancel__ts_to_ns(&ts);
}

bool
cancel__ts_valid(const struct timespec *ts)
{
	return ts != NULL && ts->tv_sec >= 0 && ts->tv_nsec >= 0 &&
	       ts->tv_nsec < (long)NS_PER_SEC;
}

uint64_t
cancel__ts_to_ns(const struct timespec *ts)
{
	uint64_t sec = (uint64_t)ts->tv_sec;
	uint64_t nsec = (uint64_t)ts->tv_nsec;

	if (sec > (CANCEL_NEVER - nsec) / NS_PER_SEC)
		return CANCEL_NEVER;
	return sec * NS_PER_SEC + nsec;
}

struct timespec
cancel__ns_to_ts(uint64_t ns)
{
	struct timespec ts;
	uint64_t sec = ns / NS_PER_SEC;

	if (ns == CANCEL_NEVER || sec > (uint64_t)TIME_T_MAX) {
		/* Never: the largest timespec, which converts back to it. */
		ts.tv_sec = TIME_T_MAX;
		ts.tv_nsec = (long)(NS_PER_SEC - 1);
		return ts;
	}
	ts.tv_sec = (time_t)sec;
	ts.tv_nsec = (long)(ns % NS_PER_SEC);
	return ts;
}

uint64_t
cancel__add_sat(uint64_t a, uint64_t b)
{
	return a > CANCEL_NEVER - b ? CANCEL_NEVER : a + b;
}

int
cancel__deadline_ns(const struct timespec *deadline, uint64_t *out)
{
	if (deadline == NULL) {
		*out = CANCEL_NEVER;
		return 0;
	}
	if (!cancel__ts_valid(deadline))
		return EINVAL;
	/* A valid deadline too far to count in nanoseconds (after about
	 * 584 years of uptime) is still a deadline, never "none": it
	 * saturates one below CANCEL_NEVER. Only the largest timespec, what
	 * cancel_deadline_in(CANCEL_NEVER) gives, means "never". */
	uint64_t ns = cancel__ts_to_ns(deadline);
	if (ns == CANCEL_NEVER && !(deadline->tv_sec == TIME_T_MAX &&
	                            deadline->tv_nsec == (long)NS_PER_SEC - 1))
		ns = CANCEL_NEVER - 1;
	*out = ns;
	return 0;
}

struct timespec
cancel_deadline_in(uint64_t ns)
{
	CANCEL_ERRNO_SAVE();
	struct timespec ts = cancel__ns_to_ts(cancel__add_sat(cancel__now_ns(),
	                                                      ns));
	CANCEL_ERRNO_RESTORE();
	return ts;
}
