/*
 * cancel_poll: poll(2) on the caller's descriptors plus the token's fd.
 *
 * The token's fd is created (once per source) only when the token can be
 * canceled, and it is signaled by every cancel that comes after its
 * creation; one created after the cancel is signaled by its creator (see
 * fd.c). The cancel check after ppoll returns decides: ECANCELED wins over
 * ready descriptors, and then no revents are reported (nothing consumed).
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#define STACK_FDS 32

static bool
is_canceled(struct cancel_source *src)
{
	/* Acquire pairs with cancel__begin's CAS. */
	return src != NULL &&
	       (ld_acquire(&src->state_) & CANCEL__S_CANCELED) != 0;
}

static void
clear_revents(struct pollfd *fds, nfds_t nfds)
{
	for (nfds_t i = 0; i < nfds; i++)
		fds[i].revents = 0;
}

/*
 * Poll @pfd (@total entries, the user's @nfds first) until something is
 * ready, @src is canceled or @dl passes.
 */
static int
poll_loop(struct pollfd *pfd, nfds_t total, nfds_t nfds,
          struct cancel_source *src, uint64_t dl)
{
	for (;;) {
		if (is_canceled(src))
			return ECANCELED;
		struct timespec rel;
		struct timespec *relp = NULL;
		bool last = false;
		if (dl != CANCEL_NEVER) {
			/* Recomputed each time round: EINTR and early
			 * returns restart with the remaining time. */
			uint64_t now = cancel__now_ns();
			last = now >= dl;
			rel = cancel__ns_to_ts(last ? 0 : dl - now);
			relp = &rel;
		}
		int n = ppoll(pfd, total, relp, NULL);
		if (n < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			return e;
		}
		if (is_canceled(src))
			return ECANCELED;
		for (nfds_t i = 0; i < nfds; i++)
			if (pfd[i].revents != 0)
				return 0;
		if (n == 0 && (last || cancel__now_ns() >= dl))
			return ETIMEDOUT;
		if (src != NULL && pfd[nfds].revents != 0) {
			/*
			 * The token's fd is readable but the token is not
			 * canceled: a spurious wake-up (e.g. a forked child
			 * wrote the shared eventfd before the fork
			 * generation check existed, or another process
			 * holding it). Consume it so the next ppoll blocks
			 * until our deadline. A real cancel's write cannot be
			 * lost here: its CAS comes before its write, so if
			 * we consumed that write, the recheck at the top
			 * sees CANCELED.
			 */
			cancel__wakefd_drain(pfd[nfds].fd);
		}
		/* Only the token's fd, or an early return: go round. */
	}
}

int
cancel_poll(struct pollfd *fds, nfds_t nfds, const struct timespec *deadline,
            cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	struct cancel_source *src = tok.src_;
	struct pollfd stack[STACK_FDS + 1];
	struct pollfd *pfd = stack;
	uint64_t dl;
	int rc = EINVAL;
	if (fds == NULL && nfds > 0)
		goto out;
	if (cancel__deadline_ns(deadline, &dl) != 0)
		goto out;
	if (src == NULL && dl == CANCEL_NEVER && nfds == 0)
		goto out;
	if (is_canceled(src)) {
		clear_revents(fds, nfds);
		rc = ECANCELED;
		goto out;
	}
	int tfd = -1;
	if (src != NULL) {
		rc = cancel__source_fd(src, &tfd);
		if (rc != 0)
			goto out;
	}
	if (nfds > STACK_FDS) {
		rc = ENOMEM;
		if (nfds >= SIZE_MAX / sizeof(*pfd) - 1)
			goto out;
		pfd = cancel__malloc((nfds + 1) * sizeof(*pfd));
		if (pfd == NULL)
			goto out;
	}
	if (nfds > 0)
		memcpy(pfd, fds, nfds * sizeof(*pfd));
	nfds_t total = nfds;
	if (src != NULL) {
		pfd[nfds].fd = tfd;
		pfd[nfds].events = POLLIN;
		total++;
	}
	for (nfds_t i = 0; i < total; i++)
		pfd[i].revents = 0;

	/* Not a cancellation point while we are counted as a waiter. */
	int cstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cstate);
	if (src != NULL)
		cancel__waiter_enter(src);
	rc = poll_loop(pfd, total, nfds, src, dl);
	if (src != NULL)
		cancel__waiter_leave(src);
	pthread_setcancelstate(cstate, NULL);

	if (rc == ECANCELED) {
		clear_revents(fds, nfds);
	} else {
		for (nfds_t i = 0; i < nfds; i++)
			fds[i].revents = rc == 0 ? pfd[i].revents : 0;
	}
	if (pfd != stack)
		cancel__free(pfd);
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}
