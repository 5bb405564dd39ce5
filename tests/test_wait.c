/*
 * cancel_wait and the park/unpark backend (run on both backends).
 */
/* ctest: TIMING */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

struct waiter {
	struct cancel_source *src;
	uint64_t deadline_ms; /* 0: none */
	int about_to_wait;
	int rc;
	int err;
};

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	struct timespec dl;
	if (w->deadline_ms != 0)
		dl = cancel_deadline_in(w->deadline_ms * 1000000ull);
	st_release(&w->about_to_wait, 1);
	errno = 4242;
	w->rc = cancel_wait(w->deadline_ms != 0 ? &dl : NULL,
	                    cancel_source_token(w->src));
	w->err = errno;
	return NULL;
}

static void
wait_returns_ecanceled_at_once_when_already_canceled(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_source_cancel(&src);
	uint64_t t0 = tu_now_ms();
	errno = 77;
	assert_int_equal(cancel_wait(NULL, cancel_source_token(&src)),
	                 ECANCELED);
	struct timespec dl = cancel_deadline_in(1000000000ull);
	assert_int_equal(cancel_wait(&dl, cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(errno, 77);
	assert_true(tu_now_ms() - t0 < 500);
	assert_int_equal(cancel__state_waiters(ld_acquire(&src.state_)), 0);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
wait_wakes_when_canceled_from_another_thread(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct waiter w = {.src = &src};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
	while (!ld_acquire(&w.about_to_wait))
		sched_yield();
	tu_await_waiters(&src, 1);
	uint64_t t0 = tu_now_ms();
	assert_true(cancel_source_cancel(&src));
	pthread_join(th, NULL);
	assert_int_equal(w.rc, ECANCELED);
	assert_int_equal(w.err, 4242);
	assert_true(tu_now_ms() - t0 < 2000);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
one_cancel_wakes_every_waiter(void **state)
{
	enum { N = 4 };
	struct cancel_source src;
	cancel_source_init(&src);
	struct waiter w[N];
	pthread_t th[N];
	for (int i = 0; i < N; i++) {
		w[i] = (struct waiter){.src = &src};
		assert_int_equal(
		        pthread_create(&th[i], NULL, waiter_main, &w[i]), 0);
	}
	tu_await_waiters(&src, N);
	assert_true(cancel_source_cancel(&src));
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].rc, ECANCELED);
	}
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
wait_returns_etimedout_at_deadline(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(100 * 1000000ull);
	errno = 5;
	assert_int_equal(cancel_wait(&dl, cancel_source_token(&src)),
	                 ETIMEDOUT);
	assert_int_equal(errno, 5);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 100);
	assert_true(el < 2000);
	assert_int_equal(cancel__state_waiters(ld_acquire(&src.state_)), 0);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
wait_with_past_deadline_times_out_without_blocking(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct timespec past = {0, 0};
	uint64_t t0 = tu_now_ms();
	assert_int_equal(cancel_wait(&past, cancel_source_token(&src)),
	                 ETIMEDOUT);
	assert_int_equal(cancel_wait(&past, CANCEL_TOKEN_NONE), ETIMEDOUT);
	assert_true(tu_now_ms() - t0 < 500);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
ecanceled_beats_etimedout(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_source_cancel(&src);
	struct timespec past = {0, 0};
	assert_int_equal(cancel_wait(&past, cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
wait_on_none_without_deadline_returns_einval(void **state)
{
	assert_int_equal(cancel_wait(NULL, CANCEL_TOKEN_NONE), EINVAL);
}

static void
wait_on_none_with_deadline_sleeps_until_it(void **state)
{
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(60 * 1000000ull);
	assert_int_equal(cancel_wait(&dl, CANCEL_TOKEN_NONE), ETIMEDOUT);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 60);
	assert_true(el < 2000);
}

static void
wait_rejects_malformed_deadline(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct timespec bad = {1, 1000000000};
	struct timespec neg = {0, -1};
	errno = 9;
	assert_int_equal(cancel_wait(&bad, cancel_source_token(&src)),
	                 EINVAL);
	assert_int_equal(cancel_wait(&neg, CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(errno, 9);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
destroy_returns_ebusy_while_a_thread_waits(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct waiter w = {.src = &src};
	pthread_t th = tu_spawn_waiter(waiter_main, &w, &src, 1);
	assert_int_equal(cancel_source_destroy(&src), EBUSY);
	cancel_source_cancel(&src);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, ECANCELED);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

struct victim {
	struct cancel_source *src;
	int returned; /* cancel_wait returned before the thread was canceled */
	int rc;
};

static void *
victim_main(void *arg)
{
	struct victim *v = arg;
	v->rc = cancel_wait(NULL, cancel_source_token(v->src));
	st_release(&v->returned, 1);
	pthread_testcancel(); /* the pending pthread_cancel acts here */
	return NULL;
}

/* pthread_cancel does not act inside a wait (it holds library state). */
static void
wait_is_not_a_pthread_cancellation_point(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct victim v = {&src, 0, -1};
	pthread_t th = tu_spawn_waiter(victim_main, &v, &src, 1);
	assert_int_equal(pthread_cancel(th), 0);
	/* Still counted as a waiter: the cancellation did not act. */
	assert_int_equal(cancel_source_destroy(&src), EBUSY);
	cancel_source_cancel(&src);
	void *res;
	pthread_join(th, &res);
	assert_true(res == PTHREAD_CANCELED);
	assert_int_equal(ld_acquire(&v.returned), 1);
	assert_int_equal(v.rc, ECANCELED);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

/* fork while another thread is parked: the child's waits still work. */
static void
waits_work_in_a_child_forked_while_a_thread_waits(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct waiter w = {.src = &src};
	pthread_t th = tu_spawn_waiter(waiter_main, &w, &src, 1);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cancel_source c;
		cancel_source_init(&c);
		struct timespec dl = cancel_deadline_in(20 * 1000000ull);
		int ok = cancel_wait(&dl, cancel_source_token(&c)) ==
		         ETIMEDOUT;
		cancel_source_cancel(&c);
		ok = ok && cancel_wait(NULL, cancel_source_token(&c)) ==
		                   ECANCELED;
		_exit(ok ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	cancel_source_cancel(&src);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, ECANCELED);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

/* Signals without SA_RESTART make futex waits and poll return EINTR. */
static void
wait_restarts_after_signals_and_times_out_on_time(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct tu_storm storm;
	tu_storm_start(&storm);
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(200 * 1000000ull);
	errno = 31;
	int rc = cancel_wait(&dl, cancel_source_token(&src));
	int err = errno;
	uint64_t el = tu_now_ms() - t0;
	tu_storm_stop(&storm);
	assert_int_equal(rc, ETIMEDOUT);
	assert_int_equal(err, 31);
	assert_true(el >= 200);
	assert_true(el < 700);
	assert_true(*tu_storm_hits() > 0);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

/* The backend alone: park sleeps only while the word holds the value. */
static void
park_returns_at_once_when_word_differs(void **state)
{
	uint32_t word = 5;
	uint64_t t0 = tu_now_ms();
	assert_int_equal(cancel__park(&word, 4, CANCEL_NEVER), 0);
	assert_true(tu_now_ms() - t0 < 500);
}

static void
park_times_out_at_absolute_deadline(void **state)
{
	uint32_t word = 0;
	uint64_t t0 = tu_now_ms();
	uint64_t dl = cancel__now_ns() + 50 * 1000000ull;
	int rc;
	do {
		rc = cancel__park(&word, 0, dl);
	} while (rc == 0); /* spurious returns are allowed */
	assert_int_equal(rc, ETIMEDOUT);
	assert_true(cancel__now_ns() >= dl);
	assert_true(tu_now_ms() - t0 < 2000);
}

struct parker {
	uint32_t word;
	int parked;
};

static void *
parker_main(void *arg)
{
	struct parker *p = arg;
	st_release(&p->parked, 1);
	while (ld_acquire(&p->word) == 0)
		cancel__park(&p->word, 0, CANCEL_NEVER);
	return NULL;
}

static void
unpark_all_wakes_a_parked_thread(void **state)
{
	struct parker p = {0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, parker_main, &p), 0);
	while (!ld_acquire(&p.parked))
		sched_yield();
	/* Release pairs with the parker's acquire load of the word. */
	st_release(&p.word, 1);
	cancel__unpark_all(&p.word);
	pthread_join(th, NULL);
	assert_int_equal(p.word, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		        wait_returns_ecanceled_at_once_when_already_canceled),
		cmocka_unit_test(wait_wakes_when_canceled_from_another_thread),
		cmocka_unit_test(one_cancel_wakes_every_waiter),
		cmocka_unit_test(wait_returns_etimedout_at_deadline),
		cmocka_unit_test(
		        wait_with_past_deadline_times_out_without_blocking),
		cmocka_unit_test(ecanceled_beats_etimedout),
		cmocka_unit_test(wait_on_none_without_deadline_returns_einval),
		cmocka_unit_test(wait_on_none_with_deadline_sleeps_until_it),
		cmocka_unit_test(wait_rejects_malformed_deadline),
		cmocka_unit_test(destroy_returns_ebusy_while_a_thread_waits),
		cmocka_unit_test(wait_is_not_a_pthread_cancellation_point),
		cmocka_unit_test(
		        waits_work_in_a_child_forked_while_a_thread_waits),
		cmocka_unit_test(
		        wait_restarts_after_signals_and_times_out_on_time),
		cmocka_unit_test(park_returns_at_once_when_word_differs),
		cmocka_unit_test(park_times_out_at_absolute_deadline),
		cmocka_unit_test(unpark_all_wakes_a_parked_thread),
	};
	return cmocka_run_group_tests_name(cancel__backend_name, tests, NULL,
	                                   NULL);
}
