/*
 * Canceling from signal handlers: cancel_source_cancel_from_signal() and
 * cancel_source_cancel_on_signal(). cancel_signal_prepare() lives with the
 * library thread (libthread.c).
 *
 * From a handler only the state-word CAS, the futex wake (futex backend),
 * the fd write and the lock-free post to the library thread happen, all
 * inside cancel__begin(..., true); callbacks, condition-wait broadcasts and
 * linked children run later on the library thread.
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>

bool
cancel_source_cancel_from_signal(struct cancel_source *src, int reason)
{
	CANCEL_ERRNO_SAVE();
	bool won = false;
	if (src != NULL) {
		if (reason <= 0)
			reason = ECANCELED;
		/* Sets CANCELED|SIGNAL and the reason in one CAS, wakes what
		 * is signal-safe to wake and queues the deferred finish. */
		won = cancel__begin(src, reason, true);
	}
	CANCEL_ERRNO_RESTORE();
	return won;
}

/*
 * The source each signal cancels, indexed by signal number. An entry is
 * published with a release store before the handler is installed and
 * read by the handler with an acquire load, so the handler sees a source
 * whose initialization happened before cancel_on_signal() was called.
 * Entries are never cleared: a stale disposition the caller restored
 * makes the handler unreachable, not the pointer dangerous.
 */
static struct cancel_source *signal_targets[NSIG];

static void
on_signal(int signo)
{
	if (signo <= 0 || signo >= NSIG)
		return;
	/* Pairs with the release store in cancel_source_cancel_on_signal. */
	struct cancel_source *src = ld_acquire(&signal_targets[signo]);
	if (src != NULL)
		cancel_source_cancel_from_signal(src, EINTR);
}

/*
 * What it does to dispositions: replaces @signo's action with on_signal
 * (SA_RESTART, nothing masked during the handler). The previous action is
 * neither saved nor chained; a caller that wants it back saves it with
 * sigaction() first and restores it itself, and must do so before
 * destroying @src. A second call for the same signal retargets it: the
 * table entry is swapped and the same action installed again.
 */
int
cancel_source_cancel_on_signal(struct cancel_source *src, int signo)
{
	CANCEL_ERRNO_SAVE();
	int rc;
	if (src == NULL || signo <= 0 || signo >= NSIG || signo == SIGKILL ||
	    signo == SIGSTOP) {
		rc = EINVAL;
		goto out;
	}
	rc = cancel_signal_prepare();
	if (rc != 0)
		goto out;

	/* Pairs with the acquire load in on_signal. */
	struct cancel_source *prev = xchg_release(&signal_targets[signo], src);

	struct sigaction sa;
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(signo, &sa, NULL) != 0) {
		/* e.g. a signal reserved by the C library: put it back. */
		rc = errno;
		/* Pairs with the acquire load in on_signal. */
		st_release(&signal_targets[signo], prev);
		goto out;
	}
	rc = 0;
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}
