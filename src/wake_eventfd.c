/*
 * The wake-up descriptor on Linux: one eventfd, read end == write end.
 */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

int
cancel__wakefd_open(int *rfd, int *wfd)
{
	int saved = errno;
	int rc = 0;
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0) {
		/* EMFILE stays EMFILE; anything else (ENFILE, ENOMEM,
		 * ENODEV) means the system cannot give us a descriptor. */
		rc = errno == EMFILE ? EMFILE : ENFILE;
		goto out;
	}
	*rfd = fd;
	*wfd = fd;
out:
	errno = saved;
	return rc;
}

void
cancel__wakefd_signal(int wfd)
{
	int saved = errno;
	uint64_t one = 1;
	/* Async-signal-safe: write(2) only. EAGAIN would mean the counter is
	 * at its maximum, i.e. already readable: fine. */
	while (write(wfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	errno = saved;
}

void
cancel__wakefd_drain(int rfd)
{
	int saved = errno;
	uint64_t v;
	/* One read resets an eventfd counter to zero. */
	while (read(rfd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	errno = saved;
}
