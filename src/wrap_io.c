/*
 * Cancelable I/O: cancel_read, cancel_write, cancel_accept, cancel_connect
 * and cancel_waitpid.
 *
 * Every call is a loop of "wait for readiness with the token's wake-up
 * (cancel_poll), then one attempt that cannot block". The token is checked
 * right before each attempt, so a call that returns ECANCELED has consumed
 * nothing. How an attempt is kept from blocking depends on the descriptor:
 *
 *   socket        recv()/send() with MSG_DONTWAIT (send also MSG_NOSIGNAL):
 *                 never blocks whatever the descriptor's own mode.
 *   regular file, never "not ready": read/write directly, writes in
 *   block device  FILE_CHUNK pieces with the token checked between them.
 *   anything else (pipe, FIFO, character device, eventfd...): a
 *                 non-blocking descriptor is tried first and polled on
 *                 EAGAIN; a blocking one is only tried after poll reported
 *                 it ready, and pipe writes go at most PIPE_BUF at a time,
 *                 which a pipe reporting POLLOUT always has room for.
 *
 * The caller's descriptor flags are never changed, except by cancel_connect
 * (O_NONBLOCK for the duration of the call, restored on every path). On a
 * blocking descriptor an attempt could still block if another thread reads,
 * writes or accepts on it between our poll and our attempt: the contract
 * only promises cancellation when the caller is the only one.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Regular-file writes go in pieces this big, canceled between them. */
#define FILE_CHUNK ((size_t)64 * 1024)
/* Largest single read()/write() request (what Linux caps them at anyway). */
#define IO_MAX ((size_t)0x7ffff000)

enum fd_kind {
	KIND_FILE,   /* regular file or block device: always ready */
	KIND_SOCKET, /* socket: MSG_DONTWAIT attempts */
	KIND_OTHER,  /* pipe, FIFO, char device, anonymous inode */
};

struct io_fd {
	int fd;
	enum fd_kind kind;
	bool blocking; /* O_NONBLOCK clear on the open file description */
	bool fifo;     /* pipe or FIFO: PIPE_BUF chunks, SIGPIPE handling */
};

/*
 * Work out how to attempt I/O on @fd without blocking.
 * Returns 0 or fstat's/fcntl's error (EBADF).
 */
static int
io_classify(int fd, struct io_fd *io)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return errno;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return errno;
	io->fd = fd;
	io->blocking = (fl & O_NONBLOCK) == 0;
	io->fifo = S_ISFIFO(st.st_mode);
	if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode))
		io->kind = KIND_FILE;
	else if (S_ISSOCK(st.st_mode))
		io->kind = KIND_SOCKET;
	else
		io->kind = KIND_OTHER;
	return 0;
}

/*
 * The lifetime mechanism (source.c): each call counts itself as a user of
 * the token's source from its start to its very end, across every poll,
 * attempt, check and regular-file chunk, so a destroy on another thread
 * waits for it to leave (or returns EBUSY while the source is not
 * canceled). io_leave is the call's last access to the source.
 */
static struct cancel_source *
io_enter(cancel_token tok)
{
	if (tok.src_ != NULL)
		cancel__waiter_enter(tok.src_);
	return tok.src_;
}

static void
io_leave(struct cancel_source *src)
{
	if (src != NULL)
		cancel__waiter_leave(src);
}

/*
 * Wait until @fd reports one of @events, the token fires or the deadline
 * passes. 0 when ready (an error or hang-up counts: the attempt reports
 * it), else ECANCELED, ETIMEDOUT, EBADF for a descriptor poll calls
 * invalid, or cancel_poll's own error.
 */
static int
wait_ready(int fd, short events, const struct timespec *deadline,
           cancel_token tok)
{
	struct pollfd pfd = { .fd = fd, .events = events, .revents = 0 };
	int rc = cancel_poll(&pfd, 1, deadline, tok);
	if (rc != 0)
		return rc;
	if (pfd.revents & POLLNVAL)
		return EBADF;
	return 0;
}

/*
 * The step before each attempt: the readiness wait when @need_poll, then
 * the token. It is checked right before the attempt, so ECANCELED consumes
 * nothing and wins over readiness seen together with it. Returns 0 to go
 * on with the attempt, else wait_ready's error or ECANCELED.
 */
static int
wait_then_check(bool need_poll, int fd, short events,
                const struct timespec *deadline, cancel_token tok)
{
	if (need_poll) {
		int rc = wait_ready(fd, events, deadline, tok);
		if (rc != 0)
			return rc;
	}
	if (cancel_token_is_canceled(tok))
		return ECANCELED;
	return 0;
}

/*
 * The checks every descriptor call makes after its own argument checks:
 * EBADF for a negative @fd, then the deadline's own error (EINVAL).
 */
static int
check_fd_deadline(int fd, const struct timespec *deadline)
{
	uint64_t dl_ns;
	if (fd < 0)
		return EBADF;
	return cancel__deadline_ns(deadline, &dl_ns);
}

/*
 * The argument checks cancel_read and cancel_write share, in this order:
 * *@done cleared, EINVAL without @done or a buffer, check_fd_deadline,
 * then the descriptor classified into @io.
 */
static int
io_begin(int fd, const void *buf, size_t len, size_t *done,
         const struct timespec *deadline, struct io_fd *io)
{
	if (done != NULL)
		*done = 0;
	if (done == NULL || (buf == NULL && len > 0))
		return EINVAL;
	int rc = check_fd_deadline(fd, deadline);
	if (rc != 0)
		return rc;
	return io_classify(fd, io);
}

/* Whether the next attempt must be preceded by a readiness wait. */
static bool
poll_first(const struct io_fd *io)
{
	return io->kind == KIND_OTHER && io->blocking;
}

/* One read attempt. Returns bytes read or -1 with errno set. */
static ssize_t
read_once(const struct io_fd *io, void *buf, size_t len)
{
	if (len > IO_MAX)
		len = IO_MAX;
	if (io->kind == KIND_SOCKET)
		return recv(io->fd, buf, len, MSG_DONTWAIT);
	return read(io->fd, buf, len);
}

/* One write attempt. Returns bytes written or -1 with errno set. */
static ssize_t
write_once(const struct io_fd *io, const void *buf, size_t len)
{
	if (io->kind == KIND_SOCKET) {
		if (len > IO_MAX)
			len = IO_MAX;
		return send(io->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	if (io->kind == KIND_FILE) {
		if (len > FILE_CHUNK)
			len = FILE_CHUNK;
	} else if (io->fifo || io->blocking) {
		/*
		 * A pipe reporting POLLOUT has at least PIPE_BUF bytes of
		 * room, so a write this small cannot block. Character
		 * devices make no such promise; PIPE_BUF keeps the
		 * remaining risk small.
		 */
		if (len > PIPE_BUF)
			len = PIPE_BUF;
	} else if (len > IO_MAX) {
		len = IO_MAX;
	}
	return write(io->fd, buf, len);
}

int
cancel_read(int fd, void *buf, size_t len, size_t *done,
            const struct timespec *deadline, cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	int oldstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);
	struct cancel_source *user = io_enter(tok);
	struct io_fd io;
	int rc = io_begin(fd, buf, len, done, deadline, &io);
	if (rc != 0)
		goto out;

	bool need_poll = poll_first(&io) && len > 0;
	for (;;) {
		rc = wait_then_check(need_poll, fd, POLLIN, deadline, tok);
		if (rc != 0)
			goto out;
		if (len == 0)
			goto out; /* nothing to read: never block for it */
		ssize_t n = read_once(&io, buf, len);
		if (n >= 0) {
			*done = (size_t)n;
			rc = 0;
			goto out;
		}
		if (errno == EINTR) {
			need_poll = poll_first(&io);
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			/* Not ready, spurious readiness or another reader. */
			need_poll = true;
		} else {
			rc = errno;
			goto out;
		}
	}
out:
	io_leave(user);
	pthread_setcancelstate(oldstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/*
 * SIGPIPE suppression for pipe writes: send() has MSG_NOSIGNAL, write()
 * does not. SIGPIPE is blocked in this thread for the call; a SIGPIPE our
 * own EPIPE write raised (thread-directed, so it stays pending on us) is
 * consumed before the mask is restored, unless one was already pending
 * before the call (then it is not ours to eat).
 */
struct sigpipe_guard {
	sigset_t old;
	bool active;
	bool was_pending;
};

static void
sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t set, pending;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	g->active = pthread_sigmask(SIG_BLOCK, &set, &g->old) == 0;
	g->was_pending = false;
	if (g->active && sigpending(&pending) == 0)
		g->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static void
sigpipe_restore(struct sigpipe_guard *g, bool got_epipe)
{
	if (!g->active)
		return;
	if (got_epipe && !g->was_pending) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGPIPE);
		struct timespec zero = { 0, 0 };
		while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

int
cancel_write(int fd, const void *buf, size_t len, size_t *done,
             const struct timespec *deadline, cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	int oldstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);
	struct cancel_source *user = io_enter(tok);
	struct io_fd io;
	struct sigpipe_guard guard = { .active = false };
	bool got_epipe = false;
	size_t total = 0;
	int rc = io_begin(fd, buf, len, done, deadline, &io);
	if (rc != 0)
		goto out;
	if (io.fifo && len > 0)
		sigpipe_block(&guard);

	const unsigned char *p = buf;
	bool need_poll = poll_first(&io);
	for (;;) {
		rc = wait_then_check(need_poll && total < len, fd, POLLOUT,
		                     deadline, tok);
		if (rc != 0)
			goto out;
		if (total == len) {
			rc = 0;
			goto out;
		}
		ssize_t n = write_once(&io, p + total, len - total);
		if (n > 0) {
			total += (size_t)n;
			/* A blocking pipe must report room again first. */
			need_poll = poll_first(&io);
		} else if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
			need_poll = true;
		} else if (errno == EINTR) {
			need_poll = poll_first(&io);
		} else {
			rc = errno;
			got_epipe = rc == EPIPE;
			goto out;
		}
	}
out:
	if (done != NULL)
		*done = total;
	sigpipe_restore(&guard, got_epipe);
	io_leave(user);
	pthread_setcancelstate(oldstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/* accept4 errors that mean "this connection went away, try the next". */
static bool
accept_retryable(int e)
{
	switch (e) {
	case EINTR:
	case EAGAIN:
#if EWOULDBLOCK != EAGAIN
	case EWOULDBLOCK:
#endif
	case ECONNABORTED:
	case EPROTO:
	case ENETDOWN:
	case ENOPROTOOPT:
	case EHOSTDOWN:
	case ENONET:
	case EHOSTUNREACH:
	case EOPNOTSUPP:
	case ENETUNREACH:
		return true;
	default:
		return false;
	}
}

int
cancel_accept(int fd, int *conn, struct sockaddr *addr, socklen_t *alen,
              const struct timespec *deadline, cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	int oldstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);
	struct cancel_source *user = io_enter(tok);
	int rc;

	if (conn == NULL || (addr != NULL && alen == NULL)) {
		rc = EINVAL;
		goto out;
	}
	*conn = -1;
	rc = check_fd_deadline(fd, deadline);
	if (rc != 0)
		goto out;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0) {
		rc = errno;
		goto out;
	}
	/*
	 * A non-blocking listener is tried first; a blocking one only after
	 * poll said a connection is queued (its own mode is left alone, so
	 * a connection stolen by another acceptor in between would block
	 * accept4: the contract covers the only-acceptor case).
	 */
	bool need_poll = (fl & O_NONBLOCK) == 0;
	socklen_t alen0 = alen != NULL ? *alen : 0;
	for (;;) {
		rc = wait_then_check(need_poll, fd, POLLIN, deadline, tok);
		if (rc != 0)
			goto out;
		if (alen != NULL)
			*alen = alen0;
		/* Close-on-exec; otherwise the kernel's default flags. */
		int c = accept4(fd, addr, alen, SOCK_CLOEXEC);
		if (c >= 0) {
			*conn = c;
			rc = 0;
			goto out;
		}
		if (!accept_retryable(errno)) {
			rc = errno;
			goto out;
		}
		need_poll = errno != EINTR || (fl & O_NONBLOCK) == 0;
	}
out:
	io_leave(user);
	pthread_setcancelstate(oldstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

int
cancel_connect(int fd, const struct sockaddr *addr, socklen_t alen,
               const struct timespec *deadline, cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	int oldstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);
	struct cancel_source *user = io_enter(tok);
	int rc;
	int fl = -1;
	bool restore = false;

	if (addr == NULL) {
		rc = EINVAL;
		goto out;
	}
	rc = check_fd_deadline(fd, deadline);
	if (rc != 0)
		goto out;
	if (cancel_token_is_canceled(tok)) {
		rc = ECANCELED;
		goto out;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0) {
		rc = errno;
		goto out;
	}
	if ((fl & O_NONBLOCK) == 0) {
		/* The one flag change the contract allows; undone at out. */
		if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
			rc = errno;
			goto out;
		}
		restore = true;
	}
	if (connect(fd, addr, alen) == 0) {
		rc = 0;
		goto out;
	}
	switch (errno) {
	case EISCONN:
		rc = 0;
		goto out;
	case EINPROGRESS:
	case EALREADY:
	case EINTR: /* the connection goes on in the background */
		break;
	default:
		/*
		 * Including EAGAIN: a Unix-domain listener with a full
		 * backlog. Nothing reports when it frees up, so this is
		 * returned as for a non-blocking connect.
		 */
		rc = errno;
		goto out;
	}
	rc = wait_then_check(true, fd, POLLOUT, deadline, tok);
	if (rc != 0)
		goto out;
	int err = 0;
	socklen_t elen = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
		err = errno;
	rc = err;
out:
	if (restore)
		fcntl(fd, F_SETFL, fl);
	io_leave(user);
	pthread_setcancelstate(oldstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/*
 * Reap @pid without blocking. 0 reaped (status stored), EAGAIN still
 * running, or waitpid's error (ECHILD).
 */
int
cancel__reap_nohang(pid_t pid, int *status)
{
	for (;;) {
		int st = 0;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid) {
			if (status != NULL)
				*status = st;
			return 0;
		}
		if (r == 0)
			return EAGAIN;
		if (errno != EINTR)
			return errno;
	}
}

/*
 * The portable fallback for kernels without pidfd_open (before 5.3):
 * nothing else reports a child's exit to poll() without taking over
 * SIGCHLD, so it checks with a backoff growing from 1 ms to 50 ms,
 * sleeping in cancel_wait() so cancellation still wakes it at once.
 */
int
cancel__waitpid_backoff(pid_t pid, int *status, uint64_t dl_ns,
                        cancel_token tok)
{
	uint64_t step = 1000000;
	for (;;) {
		int rc = cancel__reap_nohang(pid, status);
		if (rc != EAGAIN)
			return rc;
		uint64_t now = cancel__now_ns();
		if (now >= dl_ns)
			return ETIMEDOUT;
		uint64_t until = cancel__add_sat(now, step);
		if (until > dl_ns)
			until = dl_ns;
		struct timespec ts = cancel__ns_to_ts(until);
		rc = cancel_wait(&ts, tok);
		if (rc == ECANCELED)
			return rc;
		if (step < 50000000)
			step *= 2;
		if (step > 50000000)
			step = 50000000;
	}
}

int
cancel_waitpid(pid_t pid, int *status, const struct timespec *deadline,
               cancel_token tok)
{
	CANCEL_ERRNO_SAVE();
	int oldstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);
	struct cancel_source *user = io_enter(tok);
	int rc;
	uint64_t dl_ns;
	int pidfd = -1;

	if (pid <= 0) {
		rc = EINVAL;
		goto out;
	}
	rc = cancel__deadline_ns(deadline, &dl_ns);
	if (rc != 0)
		goto out;
	if (cancel_token_is_canceled(tok)) {
		rc = ECANCELED;
		goto out;
	}
	/* Already exited (or not our child): no descriptor needed. */
	rc = cancel__reap_nohang(pid, status);
	if (rc != EAGAIN)
		goto out;
	/* Close-on-exec is always set on a pidfd (pidfd_open(2)). */
	rc = cancel__pidfd_open(pid, &pidfd);
	if (rc != 0 && rc != ENOSYS) {
		if (rc == ESRCH) /* reaped by someone else meanwhile */
			rc = cancel__reap_nohang(pid, status);
		goto out;
	}
	if (pidfd < 0) {
		rc = cancel__waitpid_backoff(pid, status, dl_ns, tok);
		goto out;
	}
	/* Readable once the child has exited; it stays readable. */
	rc = wait_then_check(true, pidfd, POLLIN, deadline, tok);
	if (rc != 0)
		goto out;
	rc = cancel__reap_nohang(pid, status);
	if (rc == EAGAIN) {
		/*
		 * Readable but not reapable yet (not seen on Linux): check
		 * with the backoff rather than spin on a level-triggered fd.
		 */
		rc = cancel__waitpid_backoff(pid, status, dl_ns, tok);
	}
out:
	if (pidfd >= 0)
		close(pidfd);
	io_leave(user);
	pthread_setcancelstate(oldstate, NULL);
	CANCEL_ERRNO_RESTORE();
	return rc;
}
