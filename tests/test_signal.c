/*
 * Canceling from signal handlers: cancel_source_cancel_from_signal() from
 * a real handler wakes blocked waits at once, its callbacks run on the
 * library thread (never in the handler), errno survives; and
 * cancel_source_cancel_on_signal() installs, retargets and rejects.
 * Every test restores the dispositions it changed.
 */
/* ctest: TIMING */

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
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

/* The library thread (and whatever it keeps open) exists for every test. */
static int
group_setup(void **state)
{
	(void)state;
	return cancel_signal_prepare();
}

/* ------------------------------------------------------------------ */
/* A handler that cancels a chosen source                             */
/* ------------------------------------------------------------------ */

static struct cancel_source *handler_src;
static int handler_reason;
static volatile sig_atomic_t handler_calls;
static volatile sig_atomic_t handler_won;
static volatile sig_atomic_t handler_errno_kept;

static void
cancel_handler(int signo)
{
	(void)signo;
	int saved = errno;
	errno = 12345;
	struct cancel_source *src = handler_src;
	bool won = cancel_source_cancel_from_signal(src, handler_reason);
	handler_errno_kept = errno == 12345;
	handler_won = won;
	handler_calls++;
	errno = saved;
}

static struct sigaction saved_action;

static void
install_cancel_handler(int signo, struct cancel_source *src, int reason)
{
	handler_src = src;
	handler_reason = reason;
	handler_calls = 0;
	handler_won = 0;
	handler_errno_kept = 0;
	tu_install_handler(signo, cancel_handler, SA_RESTART, &saved_action);
}

static void
restore_handler(int signo)
{
	tu_restore_handler(signo, &saved_action);
}

/* A callback that records where it ran. */
struct probe {
	int ran;           /* release-stored 1 after the fields below */
	bool on_libthread;
	pthread_t thread;
};

static void
probe_fn(void *arg)
{
	struct probe *p = arg;
	p->on_libthread = cancel__lt_is_self();
	p->thread = pthread_self();
	st_release(&p->ran, 1); /* pairs with wait_probe's acquire */
}

/* The callback must run within a second (the machine is loaded: 2 s). */
static void
wait_probe(struct probe *p)
{
	uint64_t start = tu_now_ms();
	while (ld_acquire(&p->ran) == 0) {
		assert_true(tu_now_ms() - start < 2000);
		tu_nap();
	}
}

struct waiter {
	struct cancel_source *src;
	bool use_poll;
	int rc;
	int fd;
	pthread_t th;
};

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	cancel_token tok = cancel_source_token(w->src);
	if (w->use_poll) {
		struct pollfd pfd = { .fd = w->fd, .events = POLLIN };
		w->rc = cancel_poll(&pfd, 1, NULL, tok);
	} else {
		w->rc = cancel_wait(NULL, tok);
	}
	return NULL;
}

static void
start_waiter(struct waiter *w, struct cancel_source *src, bool use_poll,
             int fd)
{
	w->src = src;
	w->use_poll = use_poll;
	w->fd = fd;
	w->rc = -1;
	assert_int_equal(pthread_create(&w->th, NULL, waiter_main, w), 0);
}

/* ------------------------------------------------------------------ */
/* Tests                                                              */
/* ------------------------------------------------------------------ */

static void
check_handler_cancel(struct cancel_source *src)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct probe pr = { 0 };
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb, probe_fn, &pr,
	                                     cancel_source_token(src)));
	struct waiter w1, w2;
	start_waiter(&w1, src, false, -1);
	start_waiter(&w2, src, true, p[0]);
	tu_await_waiters_bounded(src, 2);

	install_cancel_handler(SIGUSR1, src, EPIPE);
	errno = 4321;
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(errno, 4321);
	assert_int_equal(handler_calls, 1);
	assert_true(handler_won);
	assert_true(handler_errno_kept);
	/* The handler returned: the token reads canceled, with its reason. */
	assert_true(cancel_token_is_canceled(cancel_source_token(src)));
	assert_int_equal(cancel_token_reason(cancel_source_token(src)), EPIPE);

	uint64_t t0 = tu_now_ms();
	assert_int_equal(pthread_join(w1.th, NULL), 0);
	assert_int_equal(pthread_join(w2.th, NULL), 0);
	assert_true(tu_now_ms() - t0 < 2000);
	assert_int_equal(w1.rc, ECANCELED);
	assert_int_equal(w2.rc, ECANCELED);

	wait_probe(&pr);
	assert_true(pr.on_libthread);
	assert_false(pthread_equal(pr.thread, pthread_self()));

	/* Second calls lose, from a handler or not; first reason stays. */
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(handler_calls, 2);
	assert_false(handler_won);
	assert_false(cancel_source_cancel_from_signal(src, EIO));
	assert_false(cancel_source_cancel(src));
	assert_int_equal(cancel_token_reason(cancel_source_token(src)), EPIPE);

	restore_handler(SIGUSR1);
	assert_false(cancel_callback_unregister(&cb));
	assert_int_equal(cancel_source_destroy(src), 0);
	close(p[0]);
	close(p[1]);
}

static void
handler_cancel_wakes_waits_and_runs_callbacks_on_libthread(
    void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	check_handler_cancel(&src);
}

static struct cancel_source static_src = CANCEL_SOURCE_INITIALIZER;

static void
cancel_from_handler_works_on_statically_initialized_source(void **state)
{
	check_handler_cancel(&static_src);
}

static void
interrupted_waiter_is_woken(bool use_poll)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct waiter w;
	start_waiter(&w, &src, use_poll, p[0]);
	tu_await_waiters_bounded(&src, 1);
	install_cancel_handler(SIGUSR1, &src, 0);
	/* The handler runs on the blocked thread itself. */
	assert_int_equal(pthread_kill(w.th, SIGUSR1), 0);
	assert_int_equal(pthread_join(w.th, NULL), 0);
	assert_int_equal(w.rc, ECANCELED);
	assert_int_equal(handler_calls, 1);
	assert_true(handler_won);
	assert_true(handler_errno_kept);
	/* Reason 0 means ECANCELED. */
	assert_int_equal(cancel_token_reason(cancel_source_token(&src)),
	                 ECANCELED);
	restore_handler(SIGUSR1);
	assert_int_equal(cancel_source_destroy(&src), 0);
	close(p[0]);
	close(p[1]);
}

static void
handler_on_thread_blocked_in_cancel_wait_wakes_it(
    void **state)
{
#ifdef TU_TSAN
	/*
	 * ThreadSanitizer defers a signal handler while its thread sits in a
	 * system call it does not intercept (the futex), and the kernel
	 * restarts that call (SA_RESTART): the handler would never run.
	 */
	skip();
#endif
	interrupted_waiter_is_woken(false);
}

static void
handler_on_thread_blocked_in_cancel_poll_wakes_it(
    void **state)
{
	interrupted_waiter_is_woken(true);
}

static void
cancel_from_signal_with_null_source_returns_false(void **state)
{
	errno = 999;
	assert_false(cancel_source_cancel_from_signal(NULL, EINTR));
	assert_int_equal(errno, 999);
}

static void
cancel_on_signal_cancels_with_eintr_and_runs_callbacks(void **state)
{
	struct sigaction old;
	assert_int_equal(sigaction(SIGUSR2, NULL, &old), 0);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	struct probe pr = { 0 };
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb, probe_fn, &pr,
	                                     cancel_source_token(&src)));
	errno = 2468;
	assert_int_equal(cancel_source_cancel_on_signal(&src, SIGUSR2), 0);
	assert_int_equal(errno, 2468);

	struct sigaction now;
	assert_int_equal(sigaction(SIGUSR2, NULL, &now), 0);
	assert_true(now.sa_flags & SA_RESTART);
	assert_true(now.sa_handler != SIG_DFL && now.sa_handler != SIG_IGN);

	assert_false(cancel_token_is_canceled(cancel_source_token(&src)));
	assert_int_equal(raise(SIGUSR2), 0);
	assert_int_equal(errno, 2468);
	assert_true(cancel_token_is_canceled(cancel_source_token(&src)));
	assert_int_equal(cancel_token_reason(cancel_source_token(&src)), EINTR);
	wait_probe(&pr);
	assert_true(pr.on_libthread);

	assert_int_equal(sigaction(SIGUSR2, &old, NULL), 0);
	assert_false(cancel_callback_unregister(&cb));
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
cancel_on_signal_again_retargets_to_the_second_source(void **state)
{
	struct sigaction old;
	assert_int_equal(sigaction(SIGUSR2, NULL, &old), 0);
	struct cancel_source a = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source b = CANCEL_SOURCE_INITIALIZER;
	assert_int_equal(cancel_source_cancel_on_signal(&a, SIGUSR2), 0);
	assert_int_equal(cancel_source_cancel_on_signal(&b, SIGUSR2), 0);
	assert_int_equal(raise(SIGUSR2), 0);
	assert_false(cancel_token_is_canceled(cancel_source_token(&a)));
	assert_true(cancel_token_is_canceled(cancel_source_token(&b)));
	assert_int_equal(cancel_token_reason(cancel_source_token(&b)), EINTR);
	/* And back again. */
	assert_int_equal(cancel_source_cancel_on_signal(&a, SIGUSR2), 0);
	assert_int_equal(raise(SIGUSR2), 0);
	assert_true(cancel_token_is_canceled(cancel_source_token(&a)));
	assert_int_equal(sigaction(SIGUSR2, &old, NULL), 0);
	assert_int_equal(cancel_source_destroy(&a), 0);
	assert_int_equal(cancel_source_destroy(&b), 0);
}

static void
cancel_on_signal_rejects_bad_arguments_and_installs_nothing(void **state)
{
	struct sigaction old, now;
	assert_int_equal(sigaction(SIGUSR2, NULL, &old), 0);
	struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	errno = 1357;
	assert_int_equal(cancel_source_cancel_on_signal(&src, SIGKILL), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(&src, SIGSTOP), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(&src, 0), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(&src, -3), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(&src, NSIG), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(&src, 100000), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(NULL, SIGUSR2),
	                 EINVAL);
	assert_int_equal(errno, 1357);
	assert_int_equal(sigaction(SIGUSR2, NULL, &now), 0);
	assert_true(now.sa_handler == old.sa_handler);
	assert_false(cancel_token_is_canceled(cancel_source_token(&src)));
	assert_int_equal(cancel_source_destroy(&src), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, tu_fds_setup, tu_fds_check)
		T(handler_cancel_wakes_waits_and_runs_callbacks_on_libthread),
		T(cancel_from_handler_works_on_statically_initialized_source),
		T(handler_on_thread_blocked_in_cancel_wait_wakes_it),
		T(handler_on_thread_blocked_in_cancel_poll_wakes_it),
		T(cancel_from_signal_with_null_source_returns_false),
		T(cancel_on_signal_cancels_with_eintr_and_runs_callbacks),
		T(cancel_on_signal_again_retargets_to_the_second_source),
		T(cancel_on_signal_rejects_bad_arguments_and_installs_nothing),
#undef T
	};
	return cmocka_run_group_tests_name("signal", tests, group_setup, NULL);
}
