/*
 * fork(): a child forked while another thread is inside a cancel (its
 * callback blocked) or blocked in a wait must be able to use the library:
 * create, arm, cancel and destroy its own sources and re-initialize an
 * inherited one, within a 5 s watchdog; and nothing it cancels wakes the
 * parent's waiters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

/* The child starts the library thread again. */
TU_THREADS_AFTER_FORK

static int
group_setup(void **state)
{
	(void)state;
	return cancel_signal_prepare();
}

/* ------------------------------------------------------------------ */
/* The child's work: no cmocka in the child, exit codes instead       */
/* ------------------------------------------------------------------ */

#define CHILD_CHECK(cond)                                                    \
	do {                                                                 \
		if (!(cond))                                                 \
			tu_child_exit(__LINE__ % 250 + 1);                     \
	} while (0)

static void
child_count(void *arg)
{
	int *n = arg;
	fetch_add_acq_rel(n, 1);
}

/*
 * Init, arm, cancel and destroy new sources; re-initialize the inherited
 * @inherited and use it. Exits 0 when everything worked.
 */
static void
child_main(struct cancel_source *inherited)
{
	alarm(5); /* watchdog: a deadlock kills the child with SIGALRM */

	/* A new source, canceled directly: callbacks run here. */
	struct cancel_source a;
	cancel_source_init(&a);
	int ran = 0;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	CHILD_CHECK(cancel_callback_register(&cb, child_count, &ran,
	                                     cancel_source_token(&a)));
	CHILD_CHECK(cancel_source_cancel(&a));
	CHILD_CHECK(ld_acquire(&ran) == 1);
	CHILD_CHECK(!cancel_callback_unregister(&cb));
	CHILD_CHECK(cancel_source_destroy(&a) == 0);

	/* A new source with a deadline: the library thread works here. */
	struct cancel_source t;
	cancel_source_init(&t);
	int tran = 0;
	struct cancel_callback tcb = CANCEL_CALLBACK_INITIALIZER;
	CHILD_CHECK(cancel_callback_register(&tcb, child_count, &tran,
	                                     cancel_source_token(&t)));
	CHILD_CHECK(cancel_source_cancel_after(&t, 20 * 1000000ull) == 0);
	CHILD_CHECK(cancel_wait(NULL, cancel_source_token(&t)) == ECANCELED);
	CHILD_CHECK(cancel_token_reason(cancel_source_token(&t)) == ETIMEDOUT);
	/* The waiter may wake before the library thread ran the callback:
	 * destroy waits for that cancel to finish. */
	CHILD_CHECK(cancel_source_destroy(&t) == 0);
	CHILD_CHECK(ld_acquire(&tran) == 1);

	/* A new source with a descriptor, woken through poll. */
	struct cancel_source f;
	cancel_source_init(&f);
	int fd = -1;
	CHILD_CHECK(cancel_token_fd(cancel_source_token(&f), &fd) == 0);
	CHILD_CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	CHILD_CHECK(cancel_source_cancel(&f));
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	CHILD_CHECK(poll(&pfd, 1, 1000) == 1);
	CHILD_CHECK(cancel_source_destroy(&f) == 0);

	/* The inherited source: initialized again, then used. */
	cancel_source_init(inherited);
	int iran = 0;
	struct cancel_callback icb = CANCEL_CALLBACK_INITIALIZER;
	CHILD_CHECK(cancel_callback_register(&icb, child_count, &iran,
	                                     cancel_source_token(inherited)));
	CHILD_CHECK(!cancel_token_is_canceled(cancel_source_token(inherited)));
	CHILD_CHECK(cancel_source_cancel(inherited));
	CHILD_CHECK(ld_acquire(&iran) == 1);
	CHILD_CHECK(cancel_wait(NULL, cancel_source_token(inherited)) ==
	            ECANCELED);
	CHILD_CHECK(!cancel_callback_unregister(&icb));
	CHILD_CHECK(cancel_source_destroy(inherited) == 0);
	tu_child_exit(0);
}

static void
reap_child_ok(pid_t pid)
{
	int status = -1;
	struct timespec dl = cancel_deadline_in(10000 * 1000000ull);
	assert_int_equal(cancel_waitpid(pid, &status, &dl, CANCEL_TOKEN_NONE),
	                 0);
	if (WIFSIGNALED(status))
		fail_msg("child killed by signal %d", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("child check failed near line %d (mod 250)",
		         WEXITSTATUS(status) - 1);
}

/* ------------------------------------------------------------------ */
/* fork during a cancel whose callback is blocked                     */
/* ------------------------------------------------------------------ */

struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool entered;
	bool release;
};

static void
blocking_callback(void *arg)
{
	struct gate *g = arg;
	pthread_mutex_lock(&g->mu);
	g->entered = true;
	pthread_cond_broadcast(&g->cv);
	while (!g->release)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static void *
canceller_main(void *arg)
{
	cancel_source_cancel(arg);
	return NULL;
}

static void
child_works_when_forked_during_a_running_cancel(void **state)
{
	struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
		          false, false };
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb, blocking_callback, &g,
	                                     cancel_source_token(&src)));
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, canceller_main, &src), 0);
	pthread_mutex_lock(&g.mu);
	while (!g.entered)
		pthread_cond_wait(&g.cv, &g.mu);
	pthread_mutex_unlock(&g.mu);

	/* The canceller is inside src's cancel, callback blocked. */
	pid_t pid = tu_fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_main(&src);
	reap_child_ok(pid);

	pthread_mutex_lock(&g.mu);
	g.release = true;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.mu);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_false(cancel_callback_unregister(&cb));
	assert_int_equal(cancel_source_destroy(&src), 0);
}

/* ------------------------------------------------------------------ */
/* fork while threads wait; the child's cancel does not wake them     */
/* ------------------------------------------------------------------ */

struct waiter {
	struct cancel_source *src;
	bool use_poll;
	int rc;
	int returned; /* release-stored after rc */
	pthread_t th;
};

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	cancel_token tok = cancel_source_token(w->src);
	if (w->use_poll)
		w->rc = cancel_poll(NULL, 0, NULL, tok);
	else
		w->rc = cancel_wait(NULL, tok);
	st_release(&w->returned, 1); /* pairs with the test's acquire */
	return NULL;
}

static void
child_cancel_does_not_wake_parent_waiters(void **state)
{
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	/* The fd exists before the fork, so the child inherits it. */
	int fd;
	assert_int_equal(cancel_token_fd(cancel_source_token(&src), &fd), 0);
	struct waiter w[2] = { { .src = &src, .use_poll = false },
		               { .src = &src, .use_poll = true } };
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&w[i].th, NULL, waiter_main,
		                                &w[i]),
		                 0);
	tu_await_waiters_bounded(&src, 2);

	pid_t pid = tu_fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_main(&src); /* re-inits src and cancels it */
	reap_child_ok(pid);

	/* Still waiting in the parent: nothing in the child reached it. */
	struct timespec ts = { 0, 50 * 1000000 };
	nanosleep(&ts, NULL);
	assert_false(cancel_token_is_canceled(cancel_source_token(&src)));
	assert_int_equal(ld_acquire(&w[0].returned), 0);
	assert_int_equal(ld_acquire(&w[1].returned), 0);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 0), 0);
	assert_int_equal(cancel__state_waiters(ld_acquire(&src.state_)), 2);

	assert_true(cancel_source_cancel(&src));
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(w[i].th, NULL), 0);
		assert_int_equal(w[i].rc, ECANCELED);
	}
	assert_int_equal(cancel_source_destroy(&src), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, tu_fds_setup, tu_fds_check)
		T(child_works_when_forked_during_a_running_cancel),
		T(child_cancel_does_not_wake_parent_waiters),
#undef T
	};
	return cmocka_run_group_tests_name("fork", tests, group_setup, NULL);
}
