/*
 * cancel_poll (run on both backends).
 */
/* ctest: TIMING */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

static void
poll_returns_ready_fd_before_cancel(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	struct pollfd fds[2] = {{p[0], POLLIN, 77}, {p[1], 0, 77}};
	errno = 21;
	assert_int_equal(cancel_poll(fds, 2, NULL, cancel_source_token(&src)),
	                 0);
	assert_int_equal(errno, 21);
	assert_true(fds[0].revents & POLLIN);
	assert_int_equal(fds[1].revents, 0);
	/* Also without a token. */
	fds[0].revents = 0;
	assert_int_equal(cancel_poll(fds, 1, NULL, CANCEL_TOKEN_NONE), 0);
	assert_true(fds[0].revents & POLLIN);
	close(p[0]);
	close(p[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_returns_ecanceled_and_no_revents_when_already_canceled(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_source_cancel(&src);
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	struct pollfd fds[1] = {{p[0], POLLIN, 77}};
	uint64_t t0 = tu_now_ms();
	assert_int_equal(cancel_poll(fds, 1, NULL, cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(fds[0].revents, 0);
	assert_true(tu_now_ms() - t0 < 500);
	char c;
	assert_int_equal(read(p[0], &c, 1), 1); /* nothing consumed */
	close(p[0]);
	close(p[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

struct poller {
	struct cancel_source *src;
	struct pollfd *fds;
	nfds_t nfds;
	int rc;
	int err;
};

static void *
poller_main(void *arg)
{
	struct poller *p = arg;
	errno = 555;
	p->rc = cancel_poll(p->fds, p->nfds, NULL,
	                    cancel_source_token(p->src));
	p->err = errno;
	return NULL;
}

static void
poll_returns_ecanceled_when_token_fires_first(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct pollfd fds[1] = {{p[0], POLLIN, 0}};
	struct poller pl = {&src, fds, 1, -1, 0};
	pthread_t th = tu_spawn_waiter(poller_main, &pl, &src, 1);
	uint64_t t0 = tu_now_ms();
	cancel_source_cancel(&src);
	pthread_join(th, NULL);
	assert_int_equal(pl.rc, ECANCELED);
	assert_int_equal(pl.err, 555);
	assert_int_equal(fds[0].revents, 0);
	assert_true(tu_now_ms() - t0 < 2000);
	close(p[0]);
	close(p[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_wakes_when_fd_becomes_ready(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct pollfd fds[1] = {{p[0], POLLIN, 0}};
	struct poller pl = {&src, fds, 1, -1, 0};
	pthread_t th = tu_spawn_waiter(poller_main, &pl, &src, 1);
	assert_int_equal(write(p[1], "x", 1), 1);
	pthread_join(th, NULL);
	assert_int_equal(pl.rc, 0);
	assert_true(fds[0].revents & POLLIN);
	close(p[0]);
	close(p[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_times_out_without_ready_fds(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct pollfd fds[1] = {{p[0], POLLIN, 9}};
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(80 * 1000000ull);
	assert_int_equal(cancel_poll(fds, 1, &dl, cancel_source_token(&src)),
	                 ETIMEDOUT);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 80);
	assert_true(el < 2000);
	assert_int_equal(fds[0].revents, 0);
	struct timespec past = {0, 0};
	assert_int_equal(cancel_poll(fds, 1, &past, CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	close(p[0]);
	close(p[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_with_no_fds_waits_for_deadline_or_cancel(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(60 * 1000000ull);
	assert_int_equal(cancel_poll(NULL, 0, &dl, cancel_source_token(&src)),
	                 ETIMEDOUT);
	assert_true(tu_now_ms() - t0 >= 60);
	dl = cancel_deadline_in(60 * 1000000ull);
	assert_int_equal(cancel_poll(NULL, 0, &dl, CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	assert_true(tu_now_ms() - t0 >= 120);
	struct poller pl = {&src, NULL, 0, -1, 0};
	pthread_t th = tu_spawn_waiter(poller_main, &pl, &src, 1);
	cancel_source_cancel(&src);
	pthread_join(th, NULL);
	assert_int_equal(pl.rc, ECANCELED);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_rejects_bad_arguments(void **state)
{
	struct timespec bad = {0, -5};
	struct cancel_source src;
	cancel_source_init(&src);
	errno = 8;
	assert_int_equal(cancel_poll(NULL, 0, NULL, CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_poll(NULL, 1, NULL, cancel_source_token(&src)),
	                 EINVAL);
	assert_int_equal(cancel_poll(NULL, 0, &bad, cancel_source_token(&src)),
	                 EINVAL);
	assert_int_equal(errno, 8);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_with_more_than_32_fds_allocates_and_reports_enomem(void **state)
{
	enum { N = 40 };
	struct cancel_source src;
	cancel_source_init(&src);
	int idle[2], ready[2];
	assert_int_equal(pipe(idle), 0);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(write(ready[1], "x", 1), 1);
	struct pollfd fds[N];
	for (int i = 0; i < N; i++)
		fds[i] = (struct pollfd){idle[0], POLLIN, 5};
	fds[N - 1].fd = ready[0];
	assert_int_equal(cancel_poll(fds, N, NULL, cancel_source_token(&src)),
	                 0);
	for (int i = 0; i < N - 1; i++)
		assert_int_equal(fds[i].revents, 0);
	assert_true(fds[N - 1].revents & POLLIN);
	/* The token's fd now exists: only the array is allocated. */
	long live = cancel__test_live_objects();
	cancel__test_fail_alloc(1);
	assert_int_equal(cancel_poll(fds, N, NULL, cancel_source_token(&src)),
	                 ENOMEM);
	cancel__test_fail_alloc(0);
	assert_int_equal(cancel__test_live_objects(), live);
	/* 32 fit on the stack: no allocation at all. */
	long allocs = cancel__test_alloc_count();
	assert_int_equal(cancel_poll(fds + N - 32, 32, NULL,
	                             cancel_source_token(&src)),
	                 0);
	assert_int_equal(cancel__test_alloc_count(), allocs);
	close(idle[0]);
	close(idle[1]);
	close(ready[0]);
	close(ready[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_restarts_after_signals_with_the_remaining_time(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct pollfd fds[1] = {{p[0], POLLIN, 0}};
	struct tu_storm storm;
	tu_storm_start(&storm);
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(200 * 1000000ull);
	errno = 66;
	int rc = cancel_poll(fds, 1, &dl, cancel_source_token(&src));
	int err = errno;
	uint64_t el = tu_now_ms() - t0;
	tu_storm_stop(&storm);
	assert_int_equal(rc, ETIMEDOUT);
	assert_int_equal(err, 66);
	assert_true(el >= 200);
	assert_true(el < 700);
	assert_true(*tu_storm_hits() > 0);
	close(p[0]);
	close(p[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
poll_reports_emfile_when_token_fd_cannot_be_created(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	int before = tu_fds();
	long live = cancel__test_live_objects();
	struct rlimit old;
	tu_limit_fds(&old);
	struct timespec past = {0, 0};
	errno = 17;
	int rc = cancel_poll(NULL, 0, &past, cancel_source_token(&src));
	int err = errno;
	tu_restore_fd_limit(&old);
	assert_int_equal(rc, EMFILE);
	assert_int_equal(err, 17);
	assert_int_equal(tu_fds(), before);
	assert_int_equal(cancel__test_live_objects(), live);
	assert_int_equal(cancel_poll(NULL, 0, &past, cancel_source_token(&src)),
	                 ETIMEDOUT);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, tu_fds_setup, tu_fds_check)
	const struct CMUnitTest tests[] = {
		T(poll_returns_ready_fd_before_cancel),
		T(poll_returns_ecanceled_and_no_revents_when_already_canceled),
		T(poll_returns_ecanceled_when_token_fires_first),
		T(poll_wakes_when_fd_becomes_ready),
		T(poll_times_out_without_ready_fds),
		T(poll_with_no_fds_waits_for_deadline_or_cancel),
		T(poll_rejects_bad_arguments),
		T(poll_with_more_than_32_fds_allocates_and_reports_enomem),
		T(poll_restarts_after_signals_with_the_remaining_time),
		T(poll_reports_emfile_when_token_fd_cannot_be_created),
	};
	return cmocka_run_group_tests_name(cancel__backend_name, tests, NULL,
	                                   NULL);
}
