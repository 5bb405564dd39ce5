/*
 * Child processes: cancel_process_spawn and cancel_process_wait.
 *
 * spawn is posix_spawn(p) with two attributes always set:
 *   POSIX_SPAWN_SETSIGDEF   every signal back to SIG_DFL in the child, so
 *                           no handler of the parent's (libcancel's
 *                           cancel_source_cancel_on_signal one included)
 *                           can run there, and ignored signals (a server's
 *                           SIGPIPE) are not inherited either;
 *   POSIX_SPAWN_SETSIGMASK  an empty mask at exec, whatever the calling
 *                           thread blocks.
 * plus POSIX_SPAWN_SETPGROUP (group 0: the child's own pid) for
 * CANCEL_SPAWN_NEW_GROUP. The group is set in the child before exec and
 * posix_spawn returns only after the exec, so no setpgid() is needed (or
 * possible: EACCES after exec) on the parent's side.
 *
 * The window between the fork-like step and exec: glibc (2.24 and later)
 * runs the child with clone(CLONE_VM | CLONE_VFORK) on a separate stack,
 * with every signal blocked in the parent across the clone; the child
 * resets every handled signal to SIG_DFL while still fully blocked, and
 * only then installs the mask it will exec with. musl does the same. So
 * no handler ever runs in the child, which matters doubly there: it shares
 * the parent's memory, and a cancel_from_signal() run in it would cancel
 * the parent's source. spawn also blocks every signal in the calling
 * thread around the call, which costs two system calls next to a process
 * creation and gives the same guarantee on a C library that would
 * implement posix_spawn with fork() and reset handlers after the mask.
 *
 * wait: the child is pinned until it is reaped (its pid, and a group with
 * that number, cannot be reused while it is a zombie), and only this call
 * reaps it, so every signal goes out before the reap. Where the kernel has
 * them (Linux 5.3), a pidfd wakes the wait when the child exits and
 * pidfd_send_signal() signals it: a pid reaped behind our back (another
 * thread's waitpid(-1), SIGCHLD set to SIG_IGN meanwhile) is never
 * signaled. The fallback, kill(), relies on nobody else reaping; its wait
 * polls waitpid(WNOHANG) with a backoff from 1 ms to 50 ms, sleeping in
 * cancel_wait() so a cancel still wakes it at once (the same fallback as
 * cancel_waitpid's).
 *
 * Group mode (the child leads its own process group when the stop
 * starts): SIGTERM and SIGCONT go to the group, and SIGKILL goes to the
 * group as soon as the child has exited or the grace ran out, whichever
 * comes first, always before the child is reaped: while the leader is an
 * unreaped zombie its number names only its own group. Members still
 * running after the child exited are therefore killed without a grace of
 * their own, and never make the wait hang (it waits for @pid only).
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define SPAWN_FLAGS (CANCEL_SPAWN_NEW_GROUP | CANCEL_SPAWN_SEARCH_PATH)

/* Fallback polling: first and longest pause between two waitpid()s. */
#define BACKOFF_MIN_NS 1000000ull
#define BACKOFF_MAX_NS 50000000ull

/* ------------------------------------------------------------------ */
/* spawn                                                              */
/* ------------------------------------------------------------------ */

/* The attributes every spawn uses: defaults, empty mask, maybe a group. */
static int
attr_setup(posix_spawnattr_t *attr, unsigned flags)
{
	sigset_t all, none;
	sigfillset(&all);
	sigemptyset(&none);
	short f = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
	int rc = posix_spawnattr_setsigdefault(attr, &all);
	if (rc == 0)
		rc = posix_spawnattr_setsigmask(attr, &none);
	if (rc == 0 && (flags & CANCEL_SPAWN_NEW_GROUP)) {
		f |= POSIX_SPAWN_SETPGROUP;
		rc = posix_spawnattr_setpgroup(attr, 0);
	}
	if (rc == 0)
		rc = posix_spawnattr_setflags(attr, f);
	return rc;
}

int
cancel_process_spawn(pid_t *pid, const char *file, char *const argv[],
                     char *const envp[],
                     const posix_spawn_file_actions_t *actions,
                     unsigned flags)
{
	CANCEL_ERRNO_SAVE();
	int rc;
	if (pid == NULL || file == NULL || argv == NULL ||
	    (flags & ~SPAWN_FLAGS) != 0) {
		rc = EINVAL;
		goto out;
	}
	posix_spawnattr_t attr;
	rc = posix_spawnattr_init(&attr);
	if (rc != 0)
		goto out;
	rc = attr_setup(&attr, flags);
	if (rc == 0) {
		/* See the top of the file: belt and braces for the window
		 * between the fork-like step and exec. */
		sigset_t all, old;
		sigfillset(&all);
		int masked = pthread_sigmask(SIG_SETMASK, &all, &old);
		pid_t child = -1;
		char *const *env = envp != NULL ? envp : environ;
		if (flags & CANCEL_SPAWN_SEARCH_PATH)
			rc = posix_spawnp(&child, file, actions, &attr, argv,
			                  env);
		else
			rc = posix_spawn(&child, file, actions, &attr, argv,
			                 env);
		if (masked == 0)
			pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rc == 0)
			*pid = child;
	}
	posix_spawnattr_destroy(&attr);
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/* ------------------------------------------------------------------ */
/* pidfd                                                              */
/* ------------------------------------------------------------------ */

/* cancel__test_pidfd_enosys(): pidfd_open reports ENOSYS while set. */
static int pidfd_off;

void
cancel__test_pidfd_enosys(bool on)
{
	/* Relaxed: tests set it between calls, on the calling thread. */
	st_relaxed(&pidfd_off, on ? 1 : 0);
}

int
cancel__pidfd_open(pid_t pid, int *fd)
{
	*fd = -1;
	if (ld_relaxed(&pidfd_off))
		return ENOSYS;
#ifdef SYS_pidfd_open
	/* Close-on-exec is always set on a pidfd (pidfd_open(2)). */
	long r = syscall(SYS_pidfd_open, pid, 0);
	if (r < 0)
		return errno;
	*fd = (int)r;
	return 0;
#else
	(void)pid;
	return ENOSYS;
#endif
}

/* ------------------------------------------------------------------ */
/* wait                                                               */
/* ------------------------------------------------------------------ */

struct child {
	pid_t pid;
	int pidfd;   /* -1: the fallback (kill, polling) */
	bool group;  /* signals go to the process group @pid */
	int status;  /* the reaped status */
};

/* True if SIGCHLD is ignored (children are reaped by the kernel). */
static bool
sigchld_ignored(void)
{
	struct sigaction sa;
	if (sigaction(SIGCHLD, NULL, &sa) != 0)
		return false;
	return sa.sa_handler == SIG_IGN || (sa.sa_flags & SA_NOCLDWAIT);
}

/* Reap a child that has exited or was sent SIGKILL: 0 or ECHILD. */
static int
reap_blocking(struct child *c)
{
	for (;;) {
		int st = 0;
		pid_t r = waitpid(c->pid, &st, 0);
		if (r == c->pid) {
			c->status = st;
			return 0;
		}
		if (r < 0 && errno != EINTR)
			return errno;
	}
}

/* True once the child has exited (it stays unreaped). */
static bool
has_exited(struct child *c)
{
	if (c->pidfd >= 0) {
		struct pollfd p = { .fd = c->pidfd, .events = POLLIN };
		int n;
		while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
			;
		return n > 0;
	}
	siginfo_t si;
	si.si_pid = 0;
	while (waitid(P_PID, (id_t)c->pid, &si,
	              WEXITED | WNOHANG | WNOWAIT) != 0) {
		if (errno != EINTR)
			return true; /* ECHILD: gone; the reap will say so */
	}
	return si.si_pid != 0;
}

/* Signal the child itself: through its pidfd when there is one. */
static void
signal_child(struct child *c, int sig)
{
#ifdef SYS_pidfd_send_signal
	if (c->pidfd >= 0) {
		if (syscall(SYS_pidfd_send_signal, c->pidfd, sig, NULL, 0) ==
		        0 ||
		    errno != ENOSYS)
			return;
	}
#endif
	kill(c->pid, sig);
}

/*
 * Signal the child, or its group in group mode. Only called while the
 * child is unreaped, so the group number cannot have been reused.
 */
static void
signal_target(struct child *c, int sig)
{
	if (c->group)
		kill(-c->pid, sig);
	else
		signal_child(c, sig);
}

/*
 * Wait, without a token, until the child exits or @dl passes: true if it
 * exited. The child is left unreaped.
 */
static bool
wait_exit_until(struct child *c, uint64_t dl)
{
	uint64_t step = BACKOFF_MIN_NS;
	for (;;) {
		if (has_exited(c))
			return true;
		uint64_t now = cancel__now_ns();
		if (now >= dl)
			return false;
		if (c->pidfd >= 0) {
			/* Readable once the child has exited. */
			struct pollfd p = { .fd = c->pidfd, .events = POLLIN };
			struct timespec rel = cancel__ns_to_ts(dl - now);
			ppoll(&p, 1, dl == CANCEL_NEVER ? NULL : &rel, NULL);
			continue;
		}
		uint64_t until = cancel__add_sat(now, step);
		if (until > dl)
			until = dl;
		struct timespec ts = cancel__ns_to_ts(until);
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		if (step < BACKOFF_MAX_NS)
			step *= 2;
	}
}

/*
 * Wait with the token until the child exits (reaped: 0), the token is
 * canceled (ECANCELED) or @dl passes (ETIMEDOUT); ECHILD if it vanished.
 * A pidfd wait that cannot get the token's descriptor (EMFILE...) or poll
 * memory falls back to polling: the wait never fails for lack of them.
 */
static int
wait_main(struct child *c, const struct timespec *deadline, uint64_t dl,
          cancel_token tok)
{
	if (cancel_token_is_canceled(tok))
		return ECANCELED;
	if (c->pidfd < 0)
		return cancel__waitpid_backoff(c->pid, &c->status, dl, tok);
	struct pollfd p = { .fd = c->pidfd, .events = POLLIN };
	int rc = cancel_poll(&p, 1, deadline, tok);
	if (rc == 0) {
		/* Readable: the child has exited. */
		return reap_blocking(c);
	}
	if (rc == ECANCELED || rc == ETIMEDOUT)
		return rc;
	return cancel__waitpid_backoff(c->pid, &c->status, dl, tok);
}

/*
 * Stop a running child: SIGTERM (and SIGCONT, so a stopped child can act
 * on it), up to @grace_ns for it to exit, then SIGKILL, then reap.
 * 0 or ECHILD (reaped behind our back).
 */
static int
stop_child(struct child *c, uint64_t grace_ns)
{
	pid_t pg = getpgid(c->pid);
	c->group = pg == c->pid;
	signal_target(c, SIGTERM);
	signal_target(c, SIGCONT);
	/* No token here: a cancel arriving during the grace changes
	 * nothing, the grace is the child's. */
	bool exited = wait_exit_until(
	    c, cancel__add_sat(cancel__now_ns(), grace_ns));
	if (c->group)
		kill(-c->pid, SIGKILL); /* the leader is still unreaped */
	if (!exited)
		signal_child(c, SIGKILL);
	return reap_blocking(c);
}

int
cancel_process_wait(pid_t pid, int *status, uint64_t grace_ns,
                    const struct timespec *deadline, cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	/* Not a cancellation point: the child must be reaped, the pidfd
	 * closed and the waiter count dropped on every path. */
	int cstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cstate);
	struct child c = { .pid = pid, .pidfd = -1, .group = false };
	struct cancel_source *src = tok.src_;
	uint64_t dl;
	int rc;
	if (pid <= 0) {
		rc = EINVAL;
		goto out;
	}
	rc = cancel__deadline_ns(deadline, &dl);
	if (rc != 0)
		goto out;
	if (sigchld_ignored()) {
		rc = ECHILD;
		goto out;
	}
	/* Exited already (whatever the token says), or not our child. */
	rc = cancel__reap_nohang(c.pid, &c.status);
	if (rc != EAGAIN)
		goto stored;

	/* The count covers every access to the source below; the nested
	 * waits (cancel_poll, cancel_wait) count themselves too. */
	if (src != NULL)
		cancel__waiter_enter(src);
	rc = cancel__pidfd_open(pid, &c.pidfd);
	if (rc == ESRCH)
		rc = ECHILD; /* reaped behind our back */
	else /* any other failure (ENOSYS, EMFILE...): the fallback */
		rc = wait_main(&c, deadline, dl, tok);
	/* Last access to the source: the grace below never looks at it, so
	 * a destroy does not wait for the grace. */
	if (src != NULL)
		cancel__waiter_leave(src);

	if (rc == ECANCELED || rc == ETIMEDOUT) {
		int why = rc;
		if (has_exited(&c)) {
			/* It exited before we sent anything: its own exit. */
			rc = reap_blocking(&c);
		} else {
			rc = stop_child(&c, grace_ns);
			if (rc == 0)
				rc = why;
		}
	}
	if (c.pidfd >= 0)
		close(c.pidfd);
stored:
	if (status != NULL && (rc == 0 || rc == ECANCELED || rc == ETIMEDOUT))
		*status = c.status;
out:
	pthread_setcancelstate(cstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}
