/*
 * cancel_token_fd and the source's descriptor (run on both backends).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

static int fds_before;
static long live_before;

static int
setup(void **state)
{
	fds_before = tu_fds();
	live_before = cancel__test_live_objects();
	return 0;
}

static int
teardown(void **state)
{
	assert_int_equal(tu_fds(), fds_before);
	assert_int_equal(cancel__test_live_objects(), live_before);
	return 0;
}

static bool
readable(int fd)
{
	struct pollfd p = {fd, POLLIN, 0};
	int n = poll(&p, 1, 0);
	return n == 1 && (p.revents & POLLIN);
}

static void
token_fd_rejects_none_and_null(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int fd = -7;
	errno = 19;
	assert_int_equal(cancel_token_fd(CANCEL_TOKEN_NONE, &fd), EINVAL);
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), NULL),
	                 EINVAL);
	assert_int_equal(errno, 19);
	assert_int_equal(fd, -7);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
token_fd_becomes_readable_on_cancel_and_stays_readable(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int fd = -1;
	errno = 23;
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), &fd), 0);
	assert_int_equal(errno, 23);
	assert_true(fd >= 0);
	assert_int_equal(cancel__test_live_objects(), live_before +
	                 (strcmp(cancel__backend_name, "futex") == 0 ? 1 : 2));
	assert_false(readable(fd));
	int again = -1;
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), &again), 0);
	assert_int_equal(again, fd);
	assert_true(cancel_source_cancel(&src));
	assert_true(readable(fd));
	assert_true(readable(fd)); /* level-triggered: still readable */
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
token_fd_created_after_cancel_is_readable_at_once(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_source_cancel(&src);
	int fd = -1;
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), &fd), 0);
	assert_true(readable(fd));
	assert_true(readable(fd));
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
token_fd_is_close_on_exec_and_non_blocking(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int fd = -1;
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), &fd), 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	int32_t w = ld_acquire(&src.wfd_);
	assert_true(w > 0);
	assert_true(fcntl(w - 1, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(w - 1, F_GETFL) & O_NONBLOCK);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
destroy_closes_the_fd(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int fd = -1;
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), &fd), 0);
	assert_true(tu_fds() > fds_before);
	assert_int_equal(cancel_source_destroy(&src), 0);
	assert_int_equal(tu_fds(), fds_before);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
}

struct racer {
	struct cancel_source *src;
	pthread_barrier_t *bar;
	int fd;
	int rc;
};

static void *
racer_main(void *arg)
{
	struct racer *r = arg;
	pthread_barrier_wait(r->bar);
	r->rc = cancel_token_fd(cancel_source_token(r->src), &r->fd);
	return NULL;
}

static void *
canceller_main(void *arg)
{
	struct racer *r = arg;
	pthread_barrier_wait(r->bar);
	cancel_source_cancel(r->src);
	return NULL;
}

/* Two creators and a cancel race: one fd, readable, nothing leaked. */
static void
concurrent_creation_yields_one_readable_fd(void **state)
{
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, 3);
	for (int round = 0; round < 300; round++) {
		struct cancel_source src;
		cancel_source_init(&src);
		struct racer r[3] = {{&src, &bar, -1, -1},
		                     {&src, &bar, -1, -1},
		                     {&src, &bar, -1, -1}};
		pthread_t th[3];
		pthread_create(&th[0], NULL, racer_main, &r[0]);
		pthread_create(&th[1], NULL, racer_main, &r[1]);
		pthread_create(&th[2], NULL, canceller_main, &r[2]);
		for (int i = 0; i < 3; i++)
			pthread_join(th[i], NULL);
		assert_int_equal(r[0].rc, 0);
		assert_int_equal(r[1].rc, 0);
		assert_int_equal(r[0].fd, r[1].fd);
		assert_true(readable(r[0].fd));
		assert_int_equal(cancel_source_destroy(&src), 0);
		assert_int_equal(tu_fds(), fds_before);
	}
	pthread_barrier_destroy(&bar);
}

static void
token_fd_reports_emfile_and_leaks_nothing(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int before = tu_fds();
	struct rlimit old, low = tu_limit_fds(&old);
	int fd = -3;
	errno = 29;
	int rc = cancel_token_fd(cancel_source_token(&src), &fd);
	int err = errno;
	/* The pipe backend needs two: leave room for one only. */
	low.rlim_cur++;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	int rc2 = strcmp(cancel__backend_name, "pthread") == 0
	                  ? cancel_token_fd(cancel_source_token(&src), &fd)
	                  : EMFILE;
	tu_restore_fd_limit(&old);
	assert_int_equal(rc, EMFILE);
	assert_int_equal(rc2, EMFILE);
	assert_int_equal(err, 29);
	assert_int_equal(fd, -3);
	assert_int_equal(tu_fds(), before);
	assert_int_equal(cancel__test_live_objects(), live_before);
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), &fd), 0);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(token_fd_rejects_none_and_null),
		T(token_fd_becomes_readable_on_cancel_and_stays_readable),
		T(token_fd_created_after_cancel_is_readable_at_once),
		T(token_fd_is_close_on_exec_and_non_blocking),
		T(destroy_closes_the_fd),
		T(concurrent_creation_yields_one_readable_fd),
		T(token_fd_reports_emfile_and_leaks_nothing),
	};
	return cmocka_run_group_tests_name(cancel__backend_name, tests, NULL,
	                                   NULL);
}
