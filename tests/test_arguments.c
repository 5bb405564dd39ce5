/*
 * Rejected arguments of the public calls (NULL pointers, reserved signal
 * numbers, malformed deadlines) and destroy's two refusals that only the
 * library thread and a failed thread start produce: EBUSY on the library
 * thread itself, EAGAIN when the thread cannot be started.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cancel.h"
#include "testutil.h"

static void
noop(void *arg)
{
	(void)arg;
}

static void
null_pointers_are_rejected(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	cancel_token tok = cancel_source_token(src);
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	errno = 999;
	assert_false(cancel_callback_register(NULL, noop, NULL, tok));
	assert_false(cancel_callback_register(&cb, NULL, NULL, tok));
	assert_int_equal(cancel_callback_try_register(NULL, noop, NULL, tok),
	                 EINVAL);
	assert_int_equal(cancel_callback_try_register(&cb, NULL, NULL, tok),
	                 EINVAL);
	assert_false(cancel_callback_unregister(NULL));
	assert_int_equal(cancel_source_destroy(NULL), EINVAL);
	assert_int_equal(cancel_source_init_linked(NULL, &tok, 1), EINVAL);
	assert_int_equal(cancel_source_init_linked(src, NULL, 1), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(NULL, SIGUSR1),
	                 EINVAL);
	assert_int_equal(cancel_token_fd(tok, NULL), EINVAL);
	int fd = -1;
	assert_int_equal(cancel_token_fd(CANCEL_TOKEN_NONE, &fd), EINVAL);
	assert_int_equal(cancel_wait(NULL, CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_waitpid(0, NULL, NULL, tok), EINVAL);
	assert_false(cancel_source_cancel(NULL));
	assert_false(cancel_source_cancel_with(NULL, EIO));
	assert_false(cancel_source_cancel_with_cause(NULL, EIO, "x"));
	assert_int_equal(cancel_queue_init(NULL), EINVAL);
	assert_int_equal(cancel_queue_run(NULL), 0);
	assert_int_equal(cancel_queue_fd(NULL), -1);
	assert_int_equal(errno, 999);
	/* The source is untouched by all of it. */
	assert_false(cancel_token_is_canceled(tok));
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
}

static void
malformed_deadlines_are_rejected(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	cancel_token tok = cancel_source_token(src);
	const struct timespec bad[] = {{0, -1}, {0, 1000000000}, {-1, 0}};
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cancel_source_cancel_at(src, &bad[i]), EINVAL);
		assert_int_equal(cancel_wait(&bad[i], tok), EINVAL);
		assert_int_equal(cancel_sleep_until(&bad[i], tok), EINVAL);
		struct pollfd p = {.fd = -1};
		assert_int_equal(cancel_poll(&p, 1, &bad[i], tok), EINVAL);
		pthread_mutex_lock(&mu);
		assert_int_equal(cancel_cond_wait(&cv, &mu, &bad[i], tok),
		                 EINVAL);
		pthread_mutex_unlock(&mu);
	}
	assert_false(cancel_token_is_canceled(tok));
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
}

static void
a_signal_the_c_library_reserves_is_refused_and_nothing_changes(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	/* glibc keeps the first two real-time signals for itself: sigaction
	 * refuses them, and the library must undo its table entry. */
	int reserved = SIGRTMIN - 1;
	assert_true(reserved > SIGSYS);
	assert_int_equal(cancel_source_cancel_on_signal(src, reserved),
	                 EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(src, SIGKILL), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(src, 0), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(src, NSIG), EINVAL);
	/* Nothing points at src: it is destroyed and freed at once. */
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
}

/* On the library thread (a deadline's callback): B was canceled from a
 * "signal handler" (deferred work queued behind this very callback), so
 * destroying B here cannot wait for that work. */
struct lt_destroy {
	struct cancel_source *b;
	int rc;
	int done;
};

static void
destroy_other_on_library_thread(void *arg)
{
	struct lt_destroy *d = arg;
	cancel_source_cancel_from_signal(d->b, EINTR);
	d->rc = cancel_source_destroy(d->b);
	tu_signal(&d->done);
}

static void
destroy_on_the_library_thread_of_a_source_queued_behind_it_is_ebusy(
    void **state)
{
	(void)state;
	struct cancel_source *a = malloc(sizeof(*a));
	struct cancel_source *b = malloc(sizeof(*b));
	assert_non_null(a);
	assert_non_null(b);
	cancel_source_init(a);
	cancel_source_init(b);
	struct lt_destroy d = {.b = b, .rc = -1};
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb,
	                                     destroy_other_on_library_thread,
	                                     &d, cancel_source_token(a)));
	assert_int_equal(cancel_source_cancel_after(a, 1000), 0);
	tu_await(&d.done);
	cancel_callback_unregister(&cb);
	assert_int_equal(d.rc, EBUSY);
	/* From here the deferred work runs and destroy waits for it. */
	assert_int_equal(cancel_source_destroy(b), 0);
	assert_int_equal(cancel_source_destroy(a), 0);
	free(b);
	free(a);
}

static void
destroy_after_a_signal_cancel_without_a_library_thread_is_eagain(
    void **state)
{
	(void)state;
	/* In a child of this still single-threaded process (this test runs
	 * first): no library thread, and a descriptor limit keeps it from
	 * starting. */
	pid_t pid = tu_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cancel_source *b = malloc(sizeof(*b));
		if (b == NULL)
			tu_child_exit(10);
		cancel_source_init(b);
		cancel_source_cancel_from_signal(b, EINTR);
		struct rlimit old;
		getrlimit(RLIMIT_NOFILE, &old);
		struct rlimit low = old;
		low.rlim_cur = (rlim_t)tu_lowest_free_fd();
		if (setrlimit(RLIMIT_NOFILE, &low) != 0)
			tu_child_exit(11);
		int rc = cancel_source_destroy(b);
		setrlimit(RLIMIT_NOFILE, &old);
		if (rc != EAGAIN)
			tu_child_exit(12);
		if (cancel_source_destroy(b) != 0)
			tu_child_exit(13);
		free(b);
		tu_child_exit(0);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		/* First: it forks while no library thread exists. */
		cmocka_unit_test(destroy_after_a_signal_cancel_without_a_library_thread_is_eagain),
		cmocka_unit_test(null_pointers_are_rejected),
		cmocka_unit_test(malformed_deadlines_are_rejected),
		cmocka_unit_test(a_signal_the_c_library_reserves_is_refused_and_nothing_changes),
		cmocka_unit_test(destroy_on_the_library_thread_of_a_source_queued_behind_it_is_ebusy),
	};
	return cmocka_run_group_tests_name("arguments", tests, NULL, NULL);
}
