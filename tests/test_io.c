/*
 * cancel_read, cancel_write, cancel_accept, cancel_connect, cancel_waitpid:
 * results, cancellation while blocked (forced with a handshake on the
 * source's waiter count, not with sleeps), nothing lost or duplicated,
 * descriptor flags left alone, no SIGPIPE, and no descriptor leaked.
 */
/* ctest: TIMING */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

static int
get_fl(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	assert_true(fl >= 0);
	return fl;
}

static void
set_nonblock(int fd)
{
	assert_int_equal(fcntl(fd, F_SETFL, get_fl(fd) | O_NONBLOCK), 0);
}

/* A thread running one I/O call; the result lands in rc/done. */
enum op { OP_READ, OP_WRITE, OP_ACCEPT, OP_CONNECT, OP_WAITPID };

struct call {
	enum op op;
	int fd;
	void *buf;
	size_t len;
	size_t done;
	int conn;
	pid_t pid;
	int status;
	struct sockaddr_in addr;
	const struct timespec *deadline;
	cancel_token tok;
	int rc;
	pthread_t th;
};

static void *
call_main(void *arg)
{
	struct call *c = arg;
	switch (c->op) {
	case OP_READ:
		c->rc = cancel_read(c->fd, c->buf, c->len, &c->done,
		                    c->deadline, c->tok);
		break;
	case OP_WRITE:
		c->rc = cancel_write(c->fd, c->buf, c->len, &c->done,
		                     c->deadline, c->tok);
		break;
	case OP_ACCEPT:
		c->rc = cancel_accept(c->fd, &c->conn, NULL, NULL,
		                      c->deadline, c->tok);
		break;
	case OP_CONNECT:
		c->rc = cancel_connect(c->fd, (struct sockaddr *)&c->addr,
		                       sizeof(c->addr), c->deadline, c->tok);
		break;
	case OP_WAITPID:
		c->rc = cancel_waitpid(c->pid, &c->status, c->deadline,
		                       c->tok);
		break;
	}
	return NULL;
}

static void
call_start(struct call *c)
{
	c->rc = -1;
	assert_int_equal(pthread_create(&c->th, NULL, call_main, c), 0);
}

static void
call_join(struct call *c)
{
	assert_int_equal(pthread_join(c->th, NULL), 0);
}

/* Start @c on a thread, cancel @src once it waits, return its result. */
static int
cancel_while_blocked(struct call *c, struct cancel_source *src)
{
	c->tok = cancel_source_token(src);
	call_start(c);
	tu_await_waiters_bounded(src, 1);
	assert_true(cancel_source_cancel(src));
	call_join(c);
	return c->rc;
}

static void
make_pipe(int p[2])
{
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
}

static void
close2(int p[2])
{
	close(p[0]);
	close(p[1]);
}

/* A listening TCP socket on 127.0.0.1, port chosen by the kernel. */
static int
make_listener(struct sockaddr_in *addr, int backlog)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(l, (struct sockaddr *)addr, sizeof(*addr)), 0);
	socklen_t al = sizeof(*addr);
	assert_int_equal(getsockname(l, (struct sockaddr *)addr, &al), 0);
	assert_int_equal(listen(l, backlog), 0);
	return l;
}

static int
tcp_socket(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	return s;
}

/* ------------------------------------------------------------------ */
/* cancel_read                                                        */
/* ------------------------------------------------------------------ */

static void
read_blocking_pipe_returns_data_and_keeps_flags(void **state)
{
	int p[2];
	make_pipe(p);
	int fl = get_fl(p[0]);
	assert_int_equal(write(p[1], "hello", 5), 5);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	char buf[16];
	size_t done = 99;
	errno = 4242;
	assert_int_equal(cancel_read(p[0], buf, sizeof(buf), &done, NULL,
	                             cancel_source_token(&src)),
	                 0);
	assert_int_equal(errno, 4242);
	assert_int_equal(done, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(get_fl(p[0]), fl);
	close2(p);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
read_nonblocking_pipe_returns_data_and_keeps_flags(void **state)
{
	int p[2];
	make_pipe(p);
	set_nonblock(p[0]);
	int fl = get_fl(p[0]);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct call c = { .op = OP_READ, .fd = p[0], .len = 16 };
	char buf[16];
	c.buf = buf;
	c.tok = cancel_source_token(&src);
	call_start(&c);
	tu_await_waiters_bounded(&src, 1); /* blocked: nothing to read yet */
	assert_int_equal(write(p[1], "abc", 3), 3);
	call_join(&c);
	assert_int_equal(c.rc, 0);
	assert_int_equal(c.done, 3);
	assert_memory_equal(buf, "abc", 3);
	assert_int_equal(get_fl(p[0]), fl);
	close2(p);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
read_returns_ecanceled_when_token_fires_while_blocked(bool nonblock)
{
	int p[2];
	make_pipe(p);
	if (nonblock)
		set_nonblock(p[0]);
	int fl = get_fl(p[0]);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	char buf[16];
	struct call c = { .op = OP_READ, .fd = p[0], .buf = buf, .len = 16 };
	c.done = 77;
	assert_int_equal(cancel_while_blocked(&c, &src), ECANCELED);
	assert_int_equal(c.done, 0);
	assert_int_equal(get_fl(p[0]), fl);
	/* Data written afterwards is still there for the next reader. */
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(read(p[0], buf, sizeof(buf)), 1);
	close2(p);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
read_blocking_pipe_returns_ecanceled_when_token_fires(void **state)
{
	read_returns_ecanceled_when_token_fires_while_blocked(false);
}

static void
read_nonblocking_pipe_returns_ecanceled_when_token_fires(void **state)
{
	read_returns_ecanceled_when_token_fires_while_blocked(true);
}

static void
read_socket_returns_ecanceled_when_token_fires(void **state)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
	                 0);
	int fl = get_fl(sv[0]);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	char buf[16];
	struct call c = { .op = OP_READ, .fd = sv[0], .buf = buf, .len = 16 };
	assert_int_equal(cancel_while_blocked(&c, &src), ECANCELED);
	assert_int_equal(c.done, 0);
	assert_int_equal(get_fl(sv[0]), fl);
	assert_int_equal(write(sv[1], "yz", 2), 2);
	size_t done = 0;
	assert_int_equal(cancel_read(sv[0], buf, sizeof(buf), &done, NULL,
	                             CANCEL_TOKEN_NONE),
	                 0);
	assert_int_equal(done, 2);
	close2(sv);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

/* Blocking pipe, non-blocking pipe, stream socket pair. */
static void
make_kind(int kind, int p[2])
{
	if (kind == 2) {
		assert_int_equal(socketpair(AF_UNIX,
		                            SOCK_STREAM | SOCK_CLOEXEC, 0, p),
		                 0);
		return;
	}
	make_pipe(p);
	if (kind == 1) {
		set_nonblock(p[0]);
		set_nonblock(p[1]);
	}
}

static void
canceled_token_reads_and_writes_nothing(void **state)
{
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	cancel_source_cancel(&src);
	for (int kind = 0; kind < 3; kind++) {
		int p[2];
		make_kind(kind, p);
		assert_int_equal(write(p[1], "data", 4), 4);
		char buf[8];
		size_t done = 5;
		assert_int_equal(cancel_read(p[0], buf, sizeof(buf), &done,
		                             NULL, cancel_source_token(&src)),
		                 ECANCELED);
		assert_int_equal(done, 0);
		done = 5;
		assert_int_equal(cancel_write(p[1], "more", 4, &done, NULL,
		                              cancel_source_token(&src)),
		                 ECANCELED);
		assert_int_equal(done, 0);
		assert_int_equal(read(p[0], buf, sizeof(buf)), 4);
		assert_memory_equal(buf, "data", 4);
		close2(p);
	}
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
read_returns_etimedout_at_deadline(void **state)
{
	int p[2];
	make_pipe(p);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	char buf[8];
	size_t done = 3;
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(100 * 1000000ull);
	assert_int_equal(cancel_read(p[0], buf, sizeof(buf), &done, &dl,
	                             cancel_source_token(&src)),
	                 ETIMEDOUT);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 90);
	assert_true(el < 2000);
	assert_int_equal(done, 0);
	close2(p);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
read_returns_zero_at_end_of_file(void **state)
{
	int p[2];
	make_pipe(p);
	close(p[1]);
	char buf[8];
	size_t done = 3;
	assert_int_equal(cancel_read(p[0], buf, sizeof(buf), &done, NULL,
	                             CANCEL_TOKEN_NONE),
	                 0);
	assert_int_equal(done, 0);
	close(p[0]);
}

static void
read_and_write_reject_bad_arguments(void **state)
{
	char buf[4];
	size_t done;
	errno = 31337;
	assert_int_equal(cancel_read(0, buf, 4, NULL, NULL, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_read(0, NULL, 4, &done, NULL,
	                             CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_read(-1, buf, 4, &done, NULL,
	                             CANCEL_TOKEN_NONE),
	                 EBADF);
	assert_int_equal(cancel_write(1, buf, 4, NULL, NULL, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_write(1, NULL, 4, &done, NULL,
	                              CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_write(-1, buf, 4, &done, NULL,
	                              CANCEL_TOKEN_NONE),
	                 EBADF);
	/* A closed descriptor. */
	int p[2];
	make_pipe(p);
	close2(p);
	assert_int_equal(cancel_read(p[0], buf, 4, &done, NULL,
	                             CANCEL_TOKEN_NONE),
	                 EBADF);
	struct timespec bad = { 0, 1000000000 };
	make_pipe(p);
	assert_int_equal(cancel_read(p[0], buf, 4, &done, &bad,
	                             CANCEL_TOKEN_NONE),
	                 EINVAL);
	close2(p);
	assert_int_equal(errno, 31337);
}

/* ------------------------------------------------------------------ */
/* cancel_write                                                       */
/* ------------------------------------------------------------------ */

#define BIG ((size_t)1 << 20)

static unsigned char
pattern(size_t i)
{
	return (unsigned char)(i * 7u + (i >> 12));
}

static void
write_canceled_midway_reports_exactly_what_went_out(bool nonblock)
{
	int p[2];
	make_pipe(p);
	if (nonblock)
		set_nonblock(p[1]);
	int fl = get_fl(p[1]);
	unsigned char *big = malloc(BIG);
	assert_non_null(big);
	for (size_t i = 0; i < BIG; i++)
		big[i] = pattern(i);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct call c = { .op = OP_WRITE, .fd = p[1], .buf = big, .len = BIG };
	c.tok = cancel_source_token(&src);
	call_start(&c);

	/* Read some (more than a pipe's capacity), then cancel. */
	size_t got = 0;
	unsigned char buf[4096];
	while (got < 200 * 1024) {
		ssize_t n = read(p[0], buf, sizeof(buf));
		assert_true(n > 0);
		for (ssize_t i = 0; i < n; i++)
			assert_int_equal(buf[i], pattern(got + (size_t)i));
		got += (size_t)n;
	}
	/* The pipe is full again: it waits. */
	tu_await_waiters_bounded(&src, 1);
	assert_true(cancel_source_cancel(&src));
	call_join(&c);
	assert_int_equal(c.rc, ECANCELED);
	assert_true(c.done >= got);
	assert_true(c.done < BIG);
	assert_int_equal(get_fl(p[1]), fl);

	/* Drain: the reader gets exactly what was reported, in order. */
	close(p[1]);
	for (;;) {
		ssize_t n = read(p[0], buf, sizeof(buf));
		assert_true(n >= 0);
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			assert_int_equal(buf[i], pattern(got + (size_t)i));
		got += (size_t)n;
	}
	assert_int_equal(got, c.done);
	close(p[0]);
	free(big);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
write_blocking_pipe_canceled_midway_reports_bytes_written(void **state)
{
	write_canceled_midway_reports_exactly_what_went_out(false);
}

static void
write_nonblocking_pipe_canceled_midway_reports_bytes_written(void **state)
{
	write_canceled_midway_reports_exactly_what_went_out(true);
}

struct drain {
	int fd;
	size_t got;
	bool ok;
};

static void *
drain_main(void *arg)
{
	struct drain *d = arg;
	unsigned char buf[8192];
	d->ok = true;
	for (;;) {
		ssize_t n = read(d->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pattern(d->got + (size_t)i))
				d->ok = false;
		d->got += (size_t)n;
	}
	return NULL;
}

static void
write_whole_buffer_to_pipe_and_socket(void **state)
{
	unsigned char *big = malloc(BIG);
	assert_non_null(big);
	for (size_t i = 0; i < BIG; i++)
		big[i] = pattern(i);
	for (int kind = 0; kind < 2; kind++) {
		int p[2];
		if (kind == 0)
			make_pipe(p);
		else
			assert_int_equal(socketpair(AF_UNIX,
			                            SOCK_STREAM | SOCK_CLOEXEC,
			                            0, p),
			                 0);
		struct drain d = { .fd = p[0] };
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
		size_t done = 0;
		assert_int_equal(cancel_write(p[1], big, BIG, &done, NULL,
		                              CANCEL_TOKEN_NONE),
		                 0);
		assert_int_equal(done, BIG);
		if (kind == 0)
			close(p[1]);
		else
			shutdown(p[1], SHUT_WR);
		assert_int_equal(pthread_join(th, NULL), 0);
		assert_true(d.ok);
		assert_int_equal(d.got, BIG);
		close2(p);
	}
	free(big);
}

static void
write_regular_file_writes_everything_unless_canceled(void **state)
{
	FILE *f = tmpfile();
	assert_non_null(f);
	int fd = fileno(f);
	unsigned char *big = malloc(BIG);
	assert_non_null(big);
	for (size_t i = 0; i < BIG; i++)
		big[i] = pattern(i);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	size_t done = 0;
	assert_int_equal(cancel_write(fd, big, BIG, &done, NULL,
	                              cancel_source_token(&src)),
	                 0);
	assert_int_equal(done, BIG);
	assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)BIG);
	cancel_source_cancel(&src);
	assert_int_equal(cancel_write(fd, big, BIG, &done, NULL,
	                              cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(done, 0);
	assert_int_equal(lseek(fd, 0, SEEK_END), (off_t)BIG);
	/* Reads from a regular file never wait for readiness. */
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(cancel_read(fd, big, 100, &done, NULL,
	                             CANCEL_TOKEN_NONE),
	                 0);
	assert_int_equal(done, 100);
	assert_int_equal(big[99], pattern(99));
	free(big);
	fclose(f);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static volatile sig_atomic_t sigpipes;

static void
count_sigpipe(int signo)
{
	(void)signo;
	sigpipes++;
}

static void
write_returns_epipe_without_sigpipe(void **state)
{
	struct sigaction old;
	tu_install_handler(SIGPIPE, count_sigpipe, 0, &old);
	sigpipes = 0;
	sigset_t mask_before, mask_after, pending;
	pthread_sigmask(SIG_SETMASK, NULL, &mask_before);

	for (int kind = 0; kind < 2; kind++) {
		int p[2];
		if (kind == 0)
			make_pipe(p);
		else
			assert_int_equal(socketpair(AF_UNIX,
			                            SOCK_STREAM | SOCK_CLOEXEC,
			                            0, p),
			                 0);
		close(p[0]);
		size_t done = 9;
		errno = 777;
		assert_int_equal(cancel_write(p[1], "abc", 3, &done, NULL,
		                              CANCEL_TOKEN_NONE),
		                 EPIPE);
		assert_int_equal(errno, 777);
		assert_int_equal(done, 0);
		close(p[1]);
	}
	assert_int_equal(sigpipes, 0);
	sigpending(&pending);
	assert_false(sigismember(&pending, SIGPIPE));
	pthread_sigmask(SIG_SETMASK, NULL, &mask_after);
	assert_int_equal(sigismember(&mask_after, SIGPIPE),
	                 sigismember(&mask_before, SIGPIPE));
	/* The handler does count a plain write's SIGPIPE: the test can
	 * fail. */
	int p[2];
	make_pipe(p);
	close(p[0]);
	assert_int_equal(write(p[1], "a", 1), -1);
	assert_int_equal(sigpipes, 1);
	close(p[1]);
	tu_restore_handler(SIGPIPE, &old);
}

/* ------------------------------------------------------------------ */
/* cancel_accept / cancel_connect                                     */
/* ------------------------------------------------------------------ */

static void
accept_returns_ecanceled_when_token_fires_while_blocked(void **state)
{
	struct sockaddr_in addr;
	int l = make_listener(&addr, 8);
	int fl = get_fl(l);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct call c = { .op = OP_ACCEPT, .fd = l };
	assert_int_equal(cancel_while_blocked(&c, &src), ECANCELED);
	assert_int_equal(c.conn, -1);
	assert_int_equal(get_fl(l), fl);
	close(l);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
accept_returns_close_on_exec_connection(void **state)
{
	struct sockaddr_in addr;
	int l = make_listener(&addr, 8);
	int cl = tcp_socket();
	assert_int_equal(connect(cl, (struct sockaddr *)&addr, sizeof(addr)),
	                 0);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	int conn = -1;
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	errno = 55;
	assert_int_equal(cancel_accept(l, &conn, (struct sockaddr *)&peer,
	                               &plen, NULL, cancel_source_token(&src)),
	                 0);
	assert_int_equal(errno, 55);
	assert_true(conn >= 0);
	assert_int_equal(plen, sizeof(peer));
	assert_int_equal(peer.sin_family, AF_INET);
	assert_true(fcntl(conn, F_GETFD) & FD_CLOEXEC);
	assert_false(get_fl(conn) & O_NONBLOCK);
	/* It works: bytes pass through. */
	assert_int_equal(write(cl, "q", 1), 1);
	char ch;
	size_t done;
	assert_int_equal(cancel_read(conn, &ch, 1, &done, NULL,
	                             cancel_source_token(&src)),
	                 0);
	assert_int_equal(done, 1);
	assert_int_equal(ch, 'q');
	close(conn);
	close(cl);
	close(l);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
accept_nonblocking_listener_waits_for_connection(void **state)
{
	struct sockaddr_in addr;
	int l = make_listener(&addr, 8);
	set_nonblock(l);
	int fl = get_fl(l);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct call c = { .op = OP_ACCEPT, .fd = l };
	c.tok = cancel_source_token(&src);
	call_start(&c);
	tu_await_waiters_bounded(&src, 1);
	int cl = tcp_socket();
	assert_int_equal(connect(cl, (struct sockaddr *)&addr, sizeof(addr)),
	                 0);
	call_join(&c);
	assert_int_equal(c.rc, 0);
	assert_true(c.conn >= 0);
	assert_true(fcntl(c.conn, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(get_fl(l), fl);
	close(c.conn);
	close(cl);
	close(l);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
connect_to_listener_succeeds_and_restores_blocking_mode(void **state)
{
	struct sockaddr_in addr;
	int l = make_listener(&addr, 8);
	int s = tcp_socket();
	int fl = get_fl(s);
	assert_false(fl & O_NONBLOCK);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct timespec dl = cancel_deadline_in(5000 * 1000000ull);
	errno = 66;
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&addr,
	                                sizeof(addr), &dl,
	                                cancel_source_token(&src)),
	                 0);
	assert_int_equal(errno, 66);
	assert_int_equal(get_fl(s), fl);
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	assert_int_equal(getpeername(s, (struct sockaddr *)&peer, &plen), 0);
	assert_int_equal(peer.sin_port, addr.sin_port);
	close(s);
	close(l);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

/* Connected already: the call's goal holds, 0, flags kept. (The kernel
 * answers the first call after a non-blocking connect completed with 0,
 * every later one with EISCONN.) */
static void
connect_on_a_connected_socket_returns_zero(void **state)
{
	struct sockaddr_in addr;
	int l = make_listener(&addr, 8);
	int s = tcp_socket();
	int fl = get_fl(s);
	struct timespec dl = cancel_deadline_in(5000 * 1000000ull);
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&addr,
	                                sizeof(addr), &dl, CANCEL_TOKEN_NONE),
	                 0);
	for (int i = 0; i < 2; i++) {
		errno = 67;
		assert_int_equal(cancel_connect(s, (struct sockaddr *)&addr,
		                                sizeof(addr), &dl,
		                                CANCEL_TOKEN_NONE),
		                 0);
		assert_int_equal(errno, 67);
	}
	assert_int_equal(get_fl(s), fl);
	close(s);
	close(l);
}

static void
connect_refused_returns_econnrefused(void **state)
{
	struct sockaddr_in addr;
	int l = make_listener(&addr, 8);
	close(l); /* nobody listens on that port now */
	int s = tcp_socket();
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&addr,
	                                sizeof(addr), NULL, CANCEL_TOKEN_NONE),
	                 ECONNREFUSED);
	assert_false(get_fl(s) & O_NONBLOCK);
	close(s);
}

/*
 * A listener with backlog 0 whose queue holds one unaccepted connection
 * drops further SYNs (Linux), so a further connect stays in progress
 * until the SYN retries run out: long enough to cancel it.
 */
static int
make_full_listener(struct sockaddr_in *addr, int *filler)
{
	int l = make_listener(addr, 0);
	int f = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(f >= 0);
	int r = connect(f, (struct sockaddr *)addr, sizeof(*addr));
	assert_true(r == 0 || errno == EINPROGRESS);
	struct pollfd pfd = { .fd = f, .events = POLLOUT };
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	int err = -1;
	socklen_t el = sizeof(err);
	assert_int_equal(getsockopt(f, SOL_SOCKET, SO_ERROR, &err, &el), 0);
	assert_int_equal(err, 0);
	*filler = f;
	return l;
}

static void
connect_returns_ecanceled_when_token_fires_while_blocked(void **state)
{
	int filler;
	struct sockaddr_in addr;
	int l = make_full_listener(&addr, &filler);
	int s = tcp_socket();
	int fl = get_fl(s);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct call c = { .op = OP_CONNECT, .fd = s, .addr = addr };
	uint64_t t0 = tu_now_ms();
	assert_int_equal(cancel_while_blocked(&c, &src), ECANCELED);
	assert_true(tu_now_ms() - t0 < 2000);
	assert_int_equal(get_fl(s), fl); /* blocking again */
	close(s);
	close(filler);
	close(l);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
connect_returns_etimedout_at_deadline(void **state)
{
	int filler;
	struct sockaddr_in addr;
	int l = make_full_listener(&addr, &filler);
	int s = tcp_socket();
	int fl = get_fl(s);
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(100 * 1000000ull);
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&addr,
	                                sizeof(addr), &dl, CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 90);
	assert_true(el < 2000);
	assert_int_equal(get_fl(s), fl);
	close(s);
	close(filler);
	close(l);
}

static void
connect_with_canceled_token_does_not_connect(void **state)
{
	struct sockaddr_in addr;
	int l = make_listener(&addr, 8);
	int s = tcp_socket();
	int fl = get_fl(s);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	cancel_source_cancel(&src);
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&addr,
	                                sizeof(addr), NULL,
	                                cancel_source_token(&src)),
	                 ECANCELED);
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	assert_int_equal(getpeername(s, (struct sockaddr *)&peer, &plen), -1);
	assert_int_equal(errno, ENOTCONN);
	assert_int_equal(get_fl(s), fl);
	close(s);
	close(l);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

/* ------------------------------------------------------------------ */
/* cancel_waitpid                                                     */
/* ------------------------------------------------------------------ */

static pid_t
spawn_sleeper(void)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(30); /* never outlive a broken test */
		for (;;)
			pause();
	}
	return pid;
}

static void
waitpid_returns_ecanceled_then_reaps_after_kill(void **state)
{
	pid_t pid = spawn_sleeper();
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct call c = { .op = OP_WAITPID, .pid = pid };
	assert_int_equal(cancel_while_blocked(&c, &src), ECANCELED);
	/* Left unreaped, still running. */
	assert_int_equal(kill(pid, 0), 0);
	assert_int_equal(kill(pid, SIGTERM), 0);
	int status = 0;
	errno = 88;
	assert_int_equal(cancel_waitpid(pid, &status, NULL, CANCEL_TOKEN_NONE),
	                 0);
	assert_int_equal(errno, 88);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGTERM);
	/* Reaped: it is gone. */
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
waitpid_returns_exit_status_when_child_exits_later(void **state)
{
	int p[2];
	make_pipe(p);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char ch;
		alarm(30);
		while (read(p[0], &ch, 1) < 0 && errno == EINTR)
			;
		_exit(7);
	}
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct call c = { .op = OP_WAITPID, .pid = pid };
	c.tok = cancel_source_token(&src);
	call_start(&c);
	tu_await_waiters_bounded(&src, 1);
	assert_int_equal(write(p[1], "g", 1), 1);
	call_join(&c);
	assert_int_equal(c.rc, 0);
	assert_true(WIFEXITED(c.status));
	assert_int_equal(WEXITSTATUS(c.status), 7);
	close2(p);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
waitpid_returns_etimedout_and_leaves_child(void **state)
{
	pid_t pid = spawn_sleeper();
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(100 * 1000000ull);
	assert_int_equal(cancel_waitpid(pid, NULL, &dl, CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 90);
	assert_true(el < 2000);
	assert_int_equal(kill(pid, SIGKILL), 0);
	int status = 0;
	assert_int_equal(cancel_waitpid(pid, &status, NULL, CANCEL_TOKEN_NONE),
	                 0);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* A malformed deadline (EINVAL) or a canceled token (ECANCELED) is
 * answered before anything is waited for: the child, exited or not, is
 * left unreaped; a later wait reaps it (@status may be NULL). */
static void
waitpid_checks_deadline_and_token_first_and_leaves_the_child(void **state)
{
	pid_t pid = spawn_sleeper();
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	assert_true(cancel_source_cancel(src));
	struct timespec bad = {.tv_sec = 1, .tv_nsec = 1000000000};
	int status = -1;
	for (int round = 0; round < 2; round++) {
		assert_int_equal(cancel_waitpid(pid, &status, &bad,
		                                CANCEL_TOKEN_NONE),
		                 EINVAL);
		assert_int_equal(cancel_waitpid(pid, &status, NULL,
		                                cancel_source_token(src)),
		                 ECANCELED);
		assert_int_equal(status, -1);
		if (round == 0) {
			assert_int_equal(kill(pid, 0), 0); /* still running */
			assert_int_equal(kill(pid, SIGKILL), 0);
			/* Exited (a zombie) once waitid sees it, unreaped. */
			siginfo_t si;
			memset(&si, 0, sizeof(si));
			assert_int_equal(waitid(P_PID, (id_t)pid, &si,
			                        WEXITED | WNOWAIT),
			                 0);
			assert_int_equal(si.si_pid, pid);
		}
	}
	assert_int_equal(cancel_waitpid(pid, NULL, NULL, CANCEL_TOKEN_NONE),
	                 0);
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
}

static void
waitpid_rejects_bad_pids(void **state)
{
	int status;
	errno = 99;
	assert_int_equal(cancel_waitpid(0, &status, NULL, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_waitpid(-1, &status, NULL, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_waitpid(getpid(), &status, NULL,
	                                CANCEL_TOKEN_NONE),
	                 ECHILD);
	assert_int_equal(errno, 99);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, tu_fds_setup, tu_fds_check)
		T(read_blocking_pipe_returns_data_and_keeps_flags),
		T(read_nonblocking_pipe_returns_data_and_keeps_flags),
		T(read_blocking_pipe_returns_ecanceled_when_token_fires),
		T(read_nonblocking_pipe_returns_ecanceled_when_token_fires),
		T(read_socket_returns_ecanceled_when_token_fires),
		T(canceled_token_reads_and_writes_nothing),
		T(read_returns_etimedout_at_deadline),
		T(read_returns_zero_at_end_of_file),
		T(read_and_write_reject_bad_arguments),
		T(write_blocking_pipe_canceled_midway_reports_bytes_written),
		T(write_nonblocking_pipe_canceled_midway_reports_bytes_written),
		T(write_whole_buffer_to_pipe_and_socket),
		T(write_regular_file_writes_everything_unless_canceled),
		T(write_returns_epipe_without_sigpipe),
		T(accept_returns_ecanceled_when_token_fires_while_blocked),
		T(accept_returns_close_on_exec_connection),
		T(accept_nonblocking_listener_waits_for_connection),
		T(connect_to_listener_succeeds_and_restores_blocking_mode),
		T(connect_on_a_connected_socket_returns_zero),
		T(connect_refused_returns_econnrefused),
		T(connect_returns_ecanceled_when_token_fires_while_blocked),
		T(connect_returns_etimedout_at_deadline),
		T(connect_with_canceled_token_does_not_connect),
		T(waitpid_returns_ecanceled_then_reaps_after_kill),
		T(waitpid_returns_exit_status_when_child_exits_later),
		T(waitpid_returns_etimedout_and_leaves_child),
		T(waitpid_rejects_bad_pids),
		T(waitpid_checks_deadline_and_token_first_and_leaves_the_child),
#undef T
	};
	return cmocka_run_group_tests_name("io", tests, NULL, NULL);
}
