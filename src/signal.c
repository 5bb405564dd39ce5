/*
 * Canceling from signal handlers: cancel_source_cancel_from_signal() and
 * cancel_source_cancel_on_signal(). cancel_signal_prepare() lives with the
 * library thread (libthread.c).
 *
 * From a handler only the state-word CAS, the futex wake (futex backend),
 * the fd write and the lock-free post to the library thread happen, all
 * inside cancel__begin(..., true); callbacks, condition-wait broadcasts and
 * linked children run later on the library thread.
 *
 * cancel_on_signal() keeps, per signal, the target source, the signal's
 * name (the cause's message), the disposition found at the first install
 * (for cancel_signal_restore()) and a count of handler runs in progress.
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>

static bool
from_signal(struct cancel_source *src, int reason, const char *msg)
{
	CANCEL_ERRNO_SAVE();
	bool won = false;
	if (src != NULL) {
		if (reason <= 0)
			reason = ECANCELED;
		/* Sets CANCELED|SIGNAL and the reason in one CAS, publishes
		 * the cause, wakes what is signal-safe to wake and queues the
		 * deferred finish. clock_gettime() is async-signal-safe. */
		won = cancel__begin(src, reason, true, msg, NULL);
	}
	CANCEL_ERRNO_RESTORE();
	return won;
}

bool
cancel_source_cancel_from_signal(struct cancel_source *src, int reason)
{
	return from_signal(src, reason, NULL);
}

bool
cancel_source_cancel_from_signal_with_cause(struct cancel_source *src,
                                            int reason, const char *msg)
{
	return from_signal(src, reason, msg);
}

/* Names of the standard signals: static text for the cause. */
static const char *const std_names[] = {
#define N(s) [s] = #s
	N(SIGHUP),  N(SIGINT),    N(SIGQUIT), N(SIGILL),    N(SIGTRAP),
	N(SIGABRT), N(SIGBUS),    N(SIGFPE),  N(SIGUSR1),   N(SIGSEGV),
	N(SIGUSR2), N(SIGPIPE),   N(SIGALRM), N(SIGTERM),   N(SIGCHLD),
	N(SIGCONT), N(SIGTSTP),   N(SIGTTIN), N(SIGTTOU),   N(SIGURG),
	N(SIGXCPU), N(SIGXFSZ),   N(SIGVTALRM), N(SIGPROF), N(SIGWINCH),
	N(SIGSYS),
#ifdef SIGIO
	N(SIGIO),
#endif
#ifdef SIGPWR
	N(SIGPWR),
#endif
#ifdef SIGSTKFLT
	N(SIGSTKFLT),
#endif
#undef N
};

#define R(n) "SIGRTMIN+" #n
static const char *const rt_names[] = {
	R(0),  R(1),  R(2),  R(3),  R(4),  R(5),  R(6),  R(7),
	R(8),  R(9),  R(10), R(11), R(12), R(13), R(14), R(15),
	R(16), R(17), R(18), R(19), R(20), R(21), R(22), R(23),
	R(24), R(25), R(26), R(27), R(28), R(29), R(30), R(31),
	R(32), R(33), R(34), R(35), R(36), R(37), R(38), R(39),
};
#undef R

static const char *
signal_name(int signo)
{
	if ((size_t)signo < sizeof(std_names) / sizeof(std_names[0]) &&
	    std_names[signo] != NULL)
		return std_names[signo];
#ifdef SIGRTMIN
	int k = signo - SIGRTMIN;
	if (k >= 0 && (size_t)k < sizeof(rt_names) / sizeof(rt_names[0]))
		return rt_names[k];
#endif
	return "signal";
}

/*
 * Per signal. target and name are published with a release store before
 * the handler is installed and read by the handler with acquire loads, so
 * it sees a source whose initialization happened before
 * cancel_on_signal() was called. saved/installed are touched only under
 * sig_mu (never by the handler). inflight counts handler runs between
 * their first and last access to target: cancel_signal_restore() clears
 * target and then waits for it to reach zero (see there).
 */
struct sig_slot {
	struct cancel_source *target;
	const char *name;
	unsigned inflight;
	bool installed;
	struct sigaction saved;
};

static struct sig_slot slots[NSIG];
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t sig_once = PTHREAD_ONCE_INIT;

static void
on_signal(int signo)
{
	if (signo <= 0 || signo >= NSIG)
		return;
	struct sig_slot *sl = &slots[signo];
	/* Seq_cst with the load below, against restore's seq_cst store of
	 * target and load of inflight: either restore sees us counted and
	 * waits, or we see target cleared (no store-load reordering). */
	fetch_add_seq(&sl->inflight, 1u);
	struct cancel_source *src = ld_seq(&sl->target);
	if (src != NULL)
		from_signal(src, EINTR, ld_acquire(&sl->name));
	/* Release pairs with restore's acquire load that sees 0: our use
	 * of src comes before its destroy. Our last access to src. */
	fetch_sub_release(&sl->inflight, 1u);
}

/*
 * After a seq_cst store of @sl's target: wait until no handler run that
 * may have read the previous target is left (see cancel_signal_restore).
 */
static void
wait_handlers(struct sig_slot *sl)
{
	unsigned spins = 0;
	/* Seq_cst (so also acquire): pairs with the handler's increment
	 * (Dekker, see on_signal) and its release decrement. */
	while (ld_seq(&sl->inflight) != 0)
		cancel__backoff(&spins);
}

static void
sig_atfork_prepare(void)
{
	pthread_mutex_lock(&sig_mu);
}

static void
sig_atfork_release(void)
{
	pthread_mutex_unlock(&sig_mu);
}

static void
sig_register_atfork(void)
{
	pthread_atfork(sig_atfork_prepare, sig_atfork_release,
	               sig_atfork_release);
}

/*
 * What it does to dispositions: replaces @signo's action with on_signal
 * (SA_RESTART, nothing masked during the handler). The action found at the
 * first install is saved for cancel_signal_restore(), never chained. A
 * second call for the same signal retargets it: the slot's target is
 * swapped, the same action installed again, and handler runs that may
 * still use the old target are waited for, so it may be destroyed.
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

	pthread_once(&sig_once, sig_register_atfork);
	pthread_mutex_lock(&sig_mu);
	struct sig_slot *sl = &slots[signo];
	/* Release pairs with the handler's acquire load. */
	st_release(&sl->name, signal_name(signo));
	/* Seq_cst: see on_signal; also publishes src's init to it. */
	struct cancel_source *prev = ld_relaxed(&sl->target);
	st_seq(&sl->target, src);

	struct sigaction sa;
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(signo, &sa, sl->installed ? NULL : &sl->saved) != 0) {
		/* e.g. a signal reserved by the C library: put it back. */
		rc = errno;
		st_seq(&sl->target, prev);
	} else {
		sl->installed = true;
		rc = 0;
		/* A retarget: handler runs that may still use the old
		 * target end before we return, as in restore. */
		if (prev != NULL && prev != src)
			wait_handlers(sl);
	}
	pthread_mutex_unlock(&sig_mu);
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/*
 * Put the saved disposition back first, so no new handler run starts;
 * then clear the target, so a run that starts anyway (a signal already
 * being delivered) finds nothing; then wait for runs that may have read
 * the old target to leave. The seq_cst store of target and load of
 * inflight here, against the handler's seq_cst increment and load of
 * target, mean a handler either is counted when we look or reads NULL.
 * A run is a handful of instructions (a CAS, maybe a futex wake and an
 * fd write), so the wait is a short spin; a run interrupted by this very
 * call cannot exist: a handler finishes before its thread continues.
 */
int
cancel_signal_restore(int signo)
{
	if (signo <= 0 || signo >= NSIG)
		return EINVAL;
	CANCEL_ERRNO_SAVE();
	int rc = 0;
	struct sig_slot *sl = &slots[signo];
	pthread_mutex_lock(&sig_mu);
	if (!sl->installed) {
		rc = EINVAL;
		goto unlock;
	}
	if (sigaction(signo, &sl->saved, NULL) != 0) {
		rc = errno;
		goto unlock;
	}
	sl->installed = false;
	st_seq(&sl->target, NULL);
	wait_handlers(sl);
unlock:
	pthread_mutex_unlock(&sig_mu);
	CANCEL_ERRNO_RESTORE();
	return rc;
}
