/*
 * The portable wake-up descriptor: a pipe, both ends close-on-exec and
 * non-blocking. Signaling writes one byte; a full pipe (EAGAIN) is already
 * readable, which is all we need.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#if !defined(CANCEL_HAVE_PIPE2) &&                                           \
	(defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
	 defined(__OpenBSD__) || defined(__DragonFly__))
#define CANCEL_HAVE_PIPE2 1
#endif

static int
open_error(int e)
{
	/* EMFILE stays EMFILE; anything else means no descriptor for us. */
	return e == EMFILE ? EMFILE : ENFILE;
}

#if !CANCEL_HAVE_PIPE2
static int
set_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return fcntl(fd, F_SETFD, FD_CLOEXEC);
}
#endif

int
cancel__wakefd_open(int *rfd, int *wfd)
{
	int saved = errno;
	int rc = 0;
	int p[2];
#if CANCEL_HAVE_PIPE2
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
		rc = open_error(errno);
		goto out;
	}
#else
	/* Not atomic with respect to a concurrent fork+exec: the best a
	 * system without pipe2() offers. */
	if (pipe(p) < 0) {
		rc = open_error(errno);
		goto out;
	}
	if (set_flags(p[0]) < 0 || set_flags(p[1]) < 0) {
		rc = open_error(errno);
		close(p[0]);
		close(p[1]);
		goto out;
	}
#endif
	*rfd = p[0];
	*wfd = p[1];
out:
	errno = saved;
	return rc;
}

void
cancel__wakefd_signal(int wfd)
{
	int saved = errno;
	char c = 1;
	/* Async-signal-safe: write(2) only. */
	while (write(wfd, &c, 1) < 0 && errno == EINTR)
		;
	errno = saved;
}

void
cancel__wakefd_drain(int rfd)
{
	int saved = errno;
	char buf[64];
	for (;;) {
		ssize_t n = read(rfd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < (ssize_t)sizeof(buf))
			break;
	}
	errno = saved;
}
