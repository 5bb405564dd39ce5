/*
 * cancel_poll (run on both backends).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
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

static uint64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int
fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static void
wait_for_waiters(struct cancel_source *src, uint32_t n)
{
	while (cancel__state_waiters(ld_acquire(&src->state_)) < n)
		sched_yield();
}

/* Every test: the descriptor table is back to where it was. */
static int fds_before;

static int
setup(void **state)
{
	fds_before = fd_count();
	return 0;
}

static int
teardown(void **state)
{
	assert_int_equal(fd_count(), fds_before);
	return 0;
}

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
	uint64_t t0 = now_ms();
	assert_int_equal(cancel_poll(fds, 1, NULL, cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(fds[0].revents, 0);
	assert_true(now_ms() - t0 < 500);
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
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, poller_main, &pl), 0);
	wait_for_waiters(&src, 1);
	uint64_t t0 = now_ms();
	cancel_source_cancel(&src);
	pthread_join(th, NULL);
	assert_int_equal(pl.rc, ECANCELED);
	assert_int_equal(pl.err, 555);
	assert_int_equal(fds[0].revents, 0);
	assert_true(now_ms() - t0 < 2000);
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
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, poller_main, &pl), 0);
	wait_for_waiters(&src, 1);
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
	uint64_t t0 = now_ms();
	struct timespec dl = cancel_deadline_in(80 * 1000000ull);
	assert_int_equal(cancel_poll(fds, 1, &dl, cancel_source_token(&src)),
	                 ETIMEDOUT);
	uint64_t el = now_ms() - t0;
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
	uint64_t t0 = now_ms();
	struct timespec dl = cancel_deadline_in(60 * 1000000ull);
	assert_int_equal(cancel_poll(NULL, 0, &dl, cancel_source_token(&src)),
	                 ETIMEDOUT);
	assert_true(now_ms() - t0 >= 60);
	dl = cancel_deadline_in(60 * 1000000ull);
	assert_int_equal(cancel_poll(NULL, 0, &dl, CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	assert_true(now_ms() - t0 >= 120);
	struct poller pl = {&src, NULL, 0, -1, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, poller_main, &pl), 0);
	wait_for_waiters(&src, 1);
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

static volatile sig_atomic_t hits;

static void
on_usr1(int sig)
{
	(void)sig;
	hits++;
}

struct pester {
	pthread_t target;
	int done;
};

static void *
pester_main(void *arg)
{
	struct pester *p = arg;
	struct timespec ms = {0, 1000000};
	while (!ld_acquire(&p->done)) {
		pthread_kill(p->target, SIGUSR1);
		nanosleep(&ms, NULL);
	}
	return NULL;
}

static void
poll_restarts_after_signals_with_the_remaining_time(void **state)
{
	struct sigaction sa, old;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
	struct cancel_source src;
	cancel_source_init(&src);
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct pollfd fds[1] = {{p[0], POLLIN, 0}};
	struct pester ps = {.target = pthread_self()};
	pthread_t th;
	hits = 0;
	assert_int_equal(pthread_create(&th, NULL, pester_main, &ps), 0);
	uint64_t t0 = now_ms();
	struct timespec dl = cancel_deadline_in(200 * 1000000ull);
	errno = 66;
	int rc = cancel_poll(fds, 1, &dl, cancel_source_token(&src));
	int err = errno;
	uint64_t el = now_ms() - t0;
	st_release(&ps.done, 1);
	pthread_join(th, NULL);
	sigaction(SIGUSR1, &old, NULL);
	assert_int_equal(rc, ETIMEDOUT);
	assert_int_equal(err, 66);
	assert_true(el >= 200);
	assert_true(el < 700);
	assert_true(hits > 0);
	close(p[0]);
	close(p[1]);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static int
lowest_free_fd(void)
{
	int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
	assert_true(fd >= 0);
	close(fd);
	return fd;
}

static void
poll_reports_emfile_when_token_fd_cannot_be_created(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest_free_fd();
	int before = fd_count();
	long live = cancel__test_live_objects();
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	struct timespec past = {0, 0};
	errno = 17;
	int rc = cancel_poll(NULL, 0, &past, cancel_source_token(&src));
	int err = errno;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(rc, EMFILE);
	assert_int_equal(err, 17);
	assert_int_equal(fd_count(), before);
	assert_int_equal(cancel__test_live_objects(), live);
	assert_int_equal(cancel_poll(NULL, 0, &past, cancel_source_token(&src)),
	                 ETIMEDOUT);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
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
