/*
 * The token's descriptor: at most one per source, created on first
 * request, readable once the source is canceled and forever after (never
 * drained), closed by destroy.
 *
 * fd_ and wfd_ hold descriptor + 1, so all-zero bytes mean "none".
 *
 * Publication: the CAS of fd_ from 0 elects one creator; a loser closes
 * its own descriptors and uses the winner's. The winner then stores wfd_
 * and sets FD in the state word. Whoever of the canceller (its CAS sets
 * CANCELED) and the creator (its fetch_or sets FD) comes second in the
 * state word's modification order sees the other's bit and signals the
 * descriptor, so a cancel is never lost; both may signal, which is
 * harmless.
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

/* Bumped in every forked child (before any code of the child runs). */
uint32_t cancel__fork_gen;

static void
fork_gen_child(void)
{
	st_relaxed(&cancel__fork_gen, ld_relaxed(&cancel__fork_gen) + 1);
}

__attribute__((constructor)) static void
fork_gen_register(void)
{
	pthread_atfork(NULL, NULL, fork_gen_child);
}

/*
 * Someone else won the creation: wait until it has set FD, so that once we
 * return a descriptor, every cancel (past or future) makes it readable. The
 * window is a few instructions of the winner's.
 */
static void
wait_fd_published(struct cancel_source *src)
{
	/* Acquire pairs with the creator's fetch_or of FD. */
	unsigned spins = 0;
	while ((ld_acquire(&src->state_) & CANCEL__S_FD) == 0)
		cancel__backoff(&spins);
}

int
cancel__source_fd(struct cancel_source *src, int *fd)
{
	/* Acquire pairs with the winner's CAS below. */
	int32_t cur = ld_acquire(&src->fd_);
	if (cur != 0) {
		wait_fd_published(src);
		*fd = cur - 1;
		return 0;
	}
	int rfd, wfd;
	int rc = cancel__wakefd_open(&rfd, &wfd);
	if (rc != 0)
		return rc;
	int32_t expected = 0;
	/* Release: a thread that reads fd_ (acquire, above) sees a fully
	 * created descriptor. */
	if (!cas_acq_rel(&src->fd_, &expected, (int32_t)rfd + 1)) {
		cancel__wakefd_close(rfd, wfd);
		wait_fd_published(src);
		*fd = expected - 1;
		return 0;
	}
	cancel__live_fd(rfd == wfd ? 1 : 2);
	/* The process generation the descriptor belongs to: a forked child
	 * never writes it (cancel__source_fd_signal). */
	st_relaxed(&src->spare_, ld_relaxed(&cancel__fork_gen));
	/* Release pairs with cancel__source_fd_signal's acquire load (which
	 * then sees spare_ too). */
	st_release(&src->wfd_, (int32_t)wfd + 1);
	/* Acq_rel: FD (with wfd_ before it) is visible to the canceller's CAS
	 * on the state word; we see CANCELED if that CAS came first. */
	uint64_t s = fetch_or_acq_rel(&src->state_, (uint64_t)CANCEL__S_FD);
	if (s & CANCEL__S_CANCELED)
		cancel__wakefd_signal(wfd);
	*fd = rfd;
	return 0;
}

void
cancel__source_fd_signal(struct cancel_source *src)
{
	/* Acquire pairs with the creator's release store of wfd_. */
	int32_t w = ld_acquire(&src->wfd_);
	/*
	 * A descriptor made before a fork is shared with the other process:
	 * writing it from the child (a signal handler canceling an
	 * inherited source) would wake the parent's pollers forever. The
	 * child never writes a descriptor it inherited.
	 */
	if (w != 0 && ld_relaxed(&src->spare_) == ld_relaxed(&cancel__fork_gen))
		cancel__wakefd_signal(w - 1);
}

void
cancel__source_fd_close(struct cancel_source *src)
{
	/* destroy: no other call uses @src now. */
	int32_t r = ld_acquire(&src->fd_);
	int32_t w = ld_acquire(&src->wfd_);
	if (r == 0)
		return;
	fetch_and_acq_rel(&src->state_, ~(uint64_t)CANCEL__S_FD);
	st_relaxed(&src->wfd_, 0);
	st_relaxed(&src->fd_, 0);
	if (w == 0)
		w = r;
	cancel__wakefd_close(r - 1, w - 1);
	cancel__live_fd(r == w ? -1 : -2);
}

int
cancel_token_fd(cancel_token tok, int *fd)
{
	if (tok.src_ == NULL || fd == NULL)
		return EINVAL;
	CANCEL_ERRNO_SAVE();
	int rc = cancel__source_fd(tok.src_, fd);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

void
cancel__wakefd_close(int rfd, int wfd)
{
	int saved = errno;
	/* Never retry close(2) on EINTR: the descriptor is gone either way. */
	close(rfd);
	if (wfd != rfd)
		close(wfd);
	errno = saved;
}
