/*
 * The error paths of cancel_read, cancel_write, cancel_accept and
 * cancel_connect: bad arguments, descriptors of the wrong kind, refused
 * and reset connections, and the descriptor flags each call must leave as
 * they were. Every result is an errno value; errno itself is unchanged.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cancel.h"
#include "testutil.h"

static const struct timespec bad_deadline = {0, -1};

/* A loopback port nobody listens on (bound, then closed). */
static struct sockaddr_in
unused_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof(a);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
	close(s);
	return a;
}

static int
listener(struct sockaddr_in *a)
{
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(ls >= 0);
	*a = (struct sockaddr_in){.sin_family = AF_INET};
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof(*a);
	assert_int_equal(bind(ls, (struct sockaddr *)a, sizeof(*a)), 0);
	assert_int_equal(listen(ls, 4), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)a, &alen), 0);
	return ls;
}

static void
read_and_write_reject_bad_arguments(void **state)
{
	(void)state;
	char buf[8];
	size_t done = 99;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	errno = 4321;
	assert_int_equal(cancel_read(p[0], buf, 1, NULL, NULL,
	                             CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_read(p[0], NULL, 1, &done, NULL,
	                             CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(done, 0);
	assert_int_equal(cancel_read(-1, buf, 1, &done, NULL,
	                             CANCEL_TOKEN_NONE), EBADF);
	assert_int_equal(cancel_read(p[0], buf, 1, &done, &bad_deadline,
	                             CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_write(p[1], NULL, 1, &done, NULL,
	                              CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_write(-1, buf, 1, &done, NULL,
	                              CANCEL_TOKEN_NONE), EBADF);
	/* A closed descriptor: fstat's EBADF. */
	int fd = dup(p[0]);
	close(fd);
	assert_int_equal(cancel_read(fd, buf, 1, &done, NULL,
	                             CANCEL_TOKEN_NONE), EBADF);
	/* Zero bytes: nothing to wait for. */
	assert_int_equal(cancel_read(p[0], buf, 0, &done, NULL,
	                             CANCEL_TOKEN_NONE), 0);
	assert_int_equal(done, 0);
	assert_int_equal(errno, 4321);
	close(p[0]);
	close(p[1]);
}

static void
read_of_a_directory_returns_its_error(void **state)
{
	(void)state;
	int d = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(d >= 0);
	char buf[8];
	size_t done = 1;
	assert_int_equal(cancel_read(d, buf, sizeof(buf), &done, NULL,
	                             CANCEL_TOKEN_NONE), EISDIR);
	assert_int_equal(done, 0);
	close(d);
}

static void
write_to_a_closed_pipe_or_socket_is_epipe(void **state)
{
	(void)state;
	struct sigaction ign = {.sa_handler = SIG_IGN}, old;
	sigemptyset(&ign.sa_mask);
	assert_int_equal(sigaction(SIGPIPE, &ign, &old), 0);
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	close(p[0]);
	size_t done = 1;
	assert_int_equal(cancel_write(p[1], "x", 1, &done, NULL,
	                              CANCEL_TOKEN_NONE), EPIPE);
	assert_int_equal(done, 0);
	close(p[1]);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
	                 0);
	close(sv[1]);
	assert_int_equal(cancel_write(sv[0], "x", 1, &done, NULL,
	                              CANCEL_TOKEN_NONE), EPIPE);
	close(sv[0]);
	assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
}

static void
large_writes_go_in_pieces_until_done_or_the_deadline(void **state)
{
	(void)state;
	size_t len = 200000;
	char *buf = calloc(1, len);
	assert_non_null(buf);
	size_t done = 0;
	/* A regular file: 64 KiB pieces, all of it. */
	char path[] = "/tmp/libcancel-io-XXXXXX";
	int f = mkostemp(path, O_CLOEXEC);
	assert_true(f >= 0);
	unlink(path);
	assert_int_equal(cancel_write(f, buf, len, &done, NULL,
	                              CANCEL_TOKEN_NONE), 0);
	assert_int_equal(done, len);
	assert_int_equal(lseek(f, 0, SEEK_END), (off_t)len);
	close(f);
	/* A blocking pipe: PIPE_BUF pieces, each after POLLOUT. */
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fcntl(p[1], F_SETPIPE_SZ, 65536), 65536);
	assert_int_equal(cancel_write(p[1], buf, 20000, &done, NULL,
	                              CANCEL_TOKEN_NONE), 0);
	assert_int_equal(done, 20000);
	/* More than the pipe holds and nobody reads: the deadline passes
	 * with the part that fit reported. */
	struct timespec dl = cancel_deadline_in(20000000);
	assert_int_equal(cancel_write(p[1], buf, len, &done, &dl,
	                              CANCEL_TOKEN_NONE), ETIMEDOUT);
	assert_true(done >= 65536 - 20000 - PIPE_BUF && done <= 65536 - 20000);
	close(p[0]);
	close(p[1]);
	free(buf);
}

static void
accept_rejects_bad_arguments_and_non_listeners(void **state)
{
	(void)state;
	int conn = 5;
	struct sockaddr_in a;
	int ls = listener(&a);
	socklen_t alen = sizeof(a);
	assert_int_equal(cancel_accept(ls, NULL, NULL, NULL, NULL,
	                               CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_accept(ls, &conn, (struct sockaddr *)&a, NULL,
	                               NULL, CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_accept(-1, &conn, NULL, NULL, NULL,
	                               CANCEL_TOKEN_NONE), EBADF);
	assert_int_equal(conn, -1);
	assert_int_equal(cancel_accept(ls, &conn, NULL, NULL, &bad_deadline,
	                               CANCEL_TOKEN_NONE), EINVAL);
	int fd = dup(ls);
	close(fd);
	assert_int_equal(cancel_accept(fd, &conn, NULL, NULL, NULL,
	                               CANCEL_TOKEN_NONE), EBADF);
	/* A non-blocking socket that is not listening: accept4's EINVAL. */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(cancel_accept(s, &conn, NULL, NULL, NULL,
	                               CANCEL_TOKEN_NONE), EINVAL);
	close(s);
	/* A real connection with its address. */
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c >= 0);
	assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
	struct sockaddr_in peer;
	alen = sizeof(peer);
	assert_int_equal(cancel_accept(ls, &conn, (struct sockaddr *)&peer,
	                               &alen, NULL, CANCEL_TOKEN_NONE), 0);
	assert_true(conn >= 0);
	assert_int_equal(alen, sizeof(peer));
	assert_int_equal(peer.sin_family, AF_INET);
	close(conn);
	close(c);
	close(ls);
}

static void
connect_reports_errors_and_restores_the_flags(void **state)
{
	(void)state;
	struct sockaddr_in a = unused_port();
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	int fl = fcntl(s, F_GETFL);
	errno = 777;
	assert_int_equal(cancel_connect(s, NULL, 0, NULL, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_connect(-1, (struct sockaddr *)&a, sizeof(a),
	                                NULL, CANCEL_TOKEN_NONE), EBADF);
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&a, sizeof(a),
	                                &bad_deadline, CANCEL_TOKEN_NONE),
	                 EINVAL);
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	cancel_source_cancel(src);
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&a, sizeof(a),
	                                NULL, cancel_source_token(src)),
	                 ECANCELED);
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
	int fd = dup(s);
	close(fd);
	assert_int_equal(cancel_connect(fd, (struct sockaddr *)&a, sizeof(a),
	                                NULL, CANCEL_TOKEN_NONE), EBADF);
	/* Nobody listens: refused, and the socket is blocking again. */
	struct timespec dl = cancel_deadline_in(5000000000ull);
	assert_int_equal(cancel_connect(s, (struct sockaddr *)&a, sizeof(a),
	                                &dl, CANCEL_TOKEN_NONE), ECONNREFUSED);
	assert_int_equal(fcntl(s, F_GETFL), fl);
	close(s);
	/* A Unix socket path that does not exist: connect's own error. */
	int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(u >= 0);
	struct sockaddr_un ua = {.sun_family = AF_UNIX};
	strcpy(ua.sun_path, "/nonexistent/libcancel-test.sock");
	assert_int_equal(cancel_connect(u, (struct sockaddr *)&ua, sizeof(ua),
	                                NULL, CANCEL_TOKEN_NONE), ENOENT);
	close(u);
	/* Already connected: EISCONN counts as done. */
	struct sockaddr_in la;
	int ls = listener(&la);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c >= 0);
	assert_int_equal(cancel_connect(c, (struct sockaddr *)&la, sizeof(la),
	                                NULL, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(cancel_connect(c, (struct sockaddr *)&la, sizeof(la),
	                                NULL, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(errno, 777);
	close(c);
	close(ls);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(read_and_write_reject_bad_arguments),
		cmocka_unit_test(read_of_a_directory_returns_its_error),
		cmocka_unit_test(write_to_a_closed_pipe_or_socket_is_epipe),
		cmocka_unit_test(large_writes_go_in_pieces_until_done_or_the_deadline),
		cmocka_unit_test(accept_rejects_bad_arguments_and_non_listeners),
		cmocka_unit_test(connect_reports_errors_and_restores_the_flags),
	};
	return cmocka_run_group_tests_name("io_errors", tests, tu_fds_setup,
	                                   tu_fds_check);
}
