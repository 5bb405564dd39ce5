/*
 * cancel_sleep and cancel_sleep_until (run on both backends).
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
#include <time.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

static void
sleep_returns_zero_after_the_full_time(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	uint64_t t0 = tu_now_ms();
	errno = 12;
	assert_int_equal(cancel_sleep(80 * 1000000ull,
	                              cancel_source_token(&src)),
	                 0);
	assert_int_equal(errno, 12);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 80);
	assert_true(el < 2000);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
sleep_on_none_is_a_plain_sleep(void **state)
{
	uint64_t t0 = tu_now_ms();
	assert_int_equal(cancel_sleep(60 * 1000000ull, CANCEL_TOKEN_NONE), 0);
	uint64_t el = tu_now_ms() - t0;
	assert_true(el >= 60);
	assert_true(el < 2000);
	assert_int_equal(cancel_sleep(0, CANCEL_TOKEN_NONE), 0);
}

static void
sleep_returns_ecanceled_at_once_when_already_canceled(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_source_cancel(&src);
	uint64_t t0 = tu_now_ms();
	assert_int_equal(cancel_sleep(5000 * 1000000ull,
	                              cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(cancel_sleep(0, cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(cancel_sleep_until(NULL, cancel_source_token(&src)),
	                 ECANCELED);
	assert_true(tu_now_ms() - t0 < 500);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

struct sleeper {
	struct cancel_source *src;
	int rc;
};

static void *
sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	cancel_token tok = cancel_source_token(s->src);
	s->rc = cancel_sleep(60ull * 1000000000ull, tok);
	return NULL;
}

static void
sleep_returns_ecanceled_early_when_canceled(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	struct sleeper s = {.src = &src};
	pthread_t th;
	uint64_t t0 = tu_now_ms();
	assert_int_equal(pthread_create(&th, NULL, sleeper_main, &s), 0);
	tu_await_waiters(&src, 1);
	cancel_source_cancel(&src);
	pthread_join(th, NULL);
	assert_int_equal(s.rc, ECANCELED);
	assert_true(tu_now_ms() - t0 < 5000);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void *
long_sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	/* now + this overflows: the deadline saturates just below NEVER. */
	s->rc = cancel_sleep(CANCEL_NEVER - 1, cancel_source_token(s->src));
	return NULL;
}

/* A duration past the end of the clock is still a sleep a cancel ends. */
static void
sleep_longer_than_the_clock_is_still_canceled(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	struct sleeper s = {.src = src, .rc = -1};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, long_sleeper_main, &s), 0);
	tu_await_waiters(src, 1);
	cancel_source_cancel(src);
	pthread_join(th, NULL);
	assert_int_equal(s.rc, ECANCELED);
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
}

static void
sleep_until_returns_zero_at_the_deadline(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	uint64_t t0 = tu_now_ms();
	struct timespec dl = cancel_deadline_in(70 * 1000000ull);
	assert_int_equal(cancel_sleep_until(&dl, cancel_source_token(&src)),
	                 0);
	assert_true(tu_now_ms() - t0 >= 70);
	struct timespec past = {0, 0};
	assert_int_equal(cancel_sleep_until(&past, cancel_source_token(&src)),
	                 0);
	assert_int_equal(cancel_sleep_until(&past, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
sleep_until_rejects_null_on_none_and_bad_deadlines(void **state)
{
	struct timespec bad = {0, 1000000000};
	errno = 3;
	assert_int_equal(cancel_sleep_until(NULL, CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(cancel_sleep_until(&bad, CANCEL_TOKEN_NONE), EINVAL);
	assert_int_equal(errno, 3);
}

/* Sleep 200 ms under a storm of SA_RESTART-less signals. */
static void
sleep_under_signals(cancel_token tok)
{
	struct tu_storm storm;
	tu_storm_start(&storm);
	uint64_t t0 = tu_now_ms();
	errno = 44;
	int rc = cancel_sleep(200 * 1000000ull, tok);
	int err = errno;
	uint64_t el = tu_now_ms() - t0;
	tu_storm_stop(&storm);
	assert_int_equal(rc, 0);
	assert_int_equal(err, 44);
	assert_true(el >= 200);
	assert_true(el < 700);
	assert_true(*tu_storm_hits() > 0);
}

static void
sleep_restarts_after_signals(void **state)
{
	struct cancel_source src;
	cancel_source_init(&src);
	sleep_under_signals(cancel_source_token(&src));
	assert_int_equal(cancel_source_destroy(&src), 0);
}

static void
plain_sleep_restarts_after_signals(void **state)
{
	sleep_under_signals(CANCEL_TOKEN_NONE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sleep_returns_zero_after_the_full_time),
		cmocka_unit_test(sleep_on_none_is_a_plain_sleep),
		cmocka_unit_test(
		        sleep_returns_ecanceled_at_once_when_already_canceled),
		cmocka_unit_test(sleep_returns_ecanceled_early_when_canceled),
		cmocka_unit_test(sleep_longer_than_the_clock_is_still_canceled),
		cmocka_unit_test(sleep_until_returns_zero_at_the_deadline),
		cmocka_unit_test(
		        sleep_until_rejects_null_on_none_and_bad_deadlines),
		cmocka_unit_test(
		        sleep_restarts_after_signals),
		cmocka_unit_test(
		        plain_sleep_restarts_after_signals),
	};
	return cmocka_run_group_tests_name(cancel__backend_name, tests, NULL,
	                                   NULL);
}
