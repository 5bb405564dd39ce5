/*
 * The watch backend on Linux: one epoll descriptor holds every watched
 * descriptor of the process. Interest: EPOLLRDHUP (unless the watch
 * ignores half-closes) plus EPOLLHUP and EPOLLERR, which epoll always
 * reports; never EPOLLIN, so unread bytes wake nothing. EPOLLONESHOT: a
 * registration is reported once, then stays disabled in the interest list
 * until stop deletes it. data.ptr is the watch; see watch.c for why that
 * is safe (epoll_wait and EPOLL_CTL_DEL both run under the lock). Nothing
 * is allocated per watch in user space.
 *
 * The loop polls the epoll descriptor (readable while an event is ready)
 * next to its wake descriptor; it is created by the first watch, which
 * kicks the loop once so its set includes it.
 */
#include "watch.h"
#include "atomic.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Events taken per epoll_wait; more stay ready and ppoll returns again. */
#define BATCH 256

/* The epoll descriptor, -1 until the first watch. Written under the lock
 * (release); read by the loop without it (acquire). */
static int epfd = -1;
/* The loop thread's poll set: its wake descriptor and epfd. */
static struct pollfd loop_set[2];

/* ADD @w to @e with its interest. 0 or the errno the caller returns. */
static int
epoll_add(int e, struct cancel_watch *w)
{
	struct epoll_event ev = {
		.events = EPOLLONESHOT | EPOLLHUP | EPOLLERR |
		          ((w->flags_ & CANCEL_WATCH_IGNORE_HALF_CLOSE)
		               ? 0u
		               : (uint32_t)EPOLLRDHUP),
		.data.ptr = w,
	};
	if (epoll_ctl(e, EPOLL_CTL_ADD, w->fd_, &ev) == 0)
		return 0;
	switch (errno) {
	case ENOSPC:
	case ENOMEM:
	case EEXIST:
		return errno;
	default: /* EBADF, EPERM (regular file), EINVAL (epfd itself) */
		return EINVAL;
	}
}

int
cancel__wb_add(struct cancel_watch *w, bool *kick)
{
	int e = ld_relaxed(&epfd);
	if (e < 0) {
		e = epoll_create1(EPOLL_CLOEXEC);
		if (e < 0)
			return errno == EMFILE || errno == ENFILE ? errno
			                                          : ENOMEM;
		/* Release pairs with the loop's acquire in
		 * cancel__wb_pollset(). */
		st_release(&epfd, e);
		*kick = true;
	}
	/* A watch of this number may be out of the set (a waiter polls it
	 * or fired it): the kernel would not see the duplicate. */
	if (cancel__watch_fd_out(w->fd_))
		return EEXIST;
	return epoll_add(e, w);
}

int
cancel__wb_suspend(struct cancel_watch *w)
{
	/* DEL also drops a ready event: the loop never reports @w while a
	 * waiter polls it (and cannot have: it is ACTIVE, not collected). */
	if (epoll_ctl(ld_relaxed(&epfd), EPOLL_CTL_DEL, w->fd_, NULL) == 0)
		return 0;
	return errno;
}

int
cancel__wb_resume(struct cancel_watch *w, bool *kick)
{
	(void)kick; /* epoll wakes the loop by itself */
	return epoll_add(ld_relaxed(&epfd), w);
}

void
cancel__wb_del(struct cancel_watch *w)
{
	/* ENOENT or EBADF: the descriptor was closed before the stop (a
	 * misuse; its registration went with its last reference). */
	epoll_ctl(ld_relaxed(&epfd), EPOLL_CTL_DEL, w->fd_, NULL);
}

struct pollfd *
cancel__wb_pollset(int kickfd, nfds_t *n)
{
	loop_set[0] = (struct pollfd){.fd = kickfd, .events = POLLIN};
	/* Acquire pairs with the release store in cancel__wb_add(). */
	int e = ld_acquire(&epfd);
	loop_set[1] = (struct pollfd){.fd = e, .events = POLLIN};
	*n = e >= 0 ? 2 : 1;
	return loop_set;
}

void
cancel__wb_collect(struct pollfd *set, nfds_t n)
{
	struct epoll_event evs[BATCH];

	if (n < 2 || set[1].revents == 0)
		return;
	/* Under the lock, with stop's DEL: see watch.c, "Identity". */
	int k;
	do
		k = epoll_wait(ld_relaxed(&epfd), evs, BATCH, 0);
	while (k < 0 && errno == EINTR);
	for (int i = 0; i < k; i++)
		cancel__watch_pend(evs[i].data.ptr);
}

void
cancel__wb_atfork_child(void)
{
	/* The child's copy shares the parent's interest list: close it,
	 * never epoll_ctl it. The first watch here makes a new one. */
	int e = ld_relaxed(&epfd);
	if (e >= 0)
		close(e);
	st_relaxed(&epfd, -1);
}
