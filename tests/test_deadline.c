/*
 * The monotonic clock helpers: saturation, timespec validation,
 * conversions and cancel_deadline_in().
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <time.h>

#include "cancel.h"
#include "internal.h"

#define NS 1000000000ull
#define TIME_T_MAX \
	((time_t)((((uint64_t)1) << (sizeof(time_t) * CHAR_BIT - 1)) - 1))

static uint64_t
raw_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void
add_sat_saturates_at_never(void **state)
{
	(void)state;
	assert_true(cancel__add_sat(1, 2) == 3);
	assert_true(cancel__add_sat(0, 0) == 0);
	assert_true(cancel__add_sat(CANCEL_NEVER - 1, 0) == CANCEL_NEVER - 1);
	assert_true(cancel__add_sat(CANCEL_NEVER - 1, 1) == CANCEL_NEVER);
	assert_true(cancel__add_sat(CANCEL_NEVER - 1, 2) == CANCEL_NEVER);
	assert_true(cancel__add_sat(2, CANCEL_NEVER - 1) == CANCEL_NEVER);
	assert_true(cancel__add_sat(CANCEL_NEVER, CANCEL_NEVER) ==
	            CANCEL_NEVER);
	assert_true(cancel__add_sat(CANCEL_NEVER / 2, CANCEL_NEVER / 2) ==
	            CANCEL_NEVER - 1);
}

static void
ts_valid_rejects_bad_nsec_and_negative_sec(void **state)
{
	(void)state;
	struct timespec ts = {0, -1};
	assert_false(cancel__ts_valid(&ts));
	ts.tv_nsec = 1000000000;
	assert_false(cancel__ts_valid(&ts));
	ts.tv_nsec = LONG_MAX;
	assert_false(cancel__ts_valid(&ts));
	ts.tv_sec = -1;
	ts.tv_nsec = 0;
	assert_false(cancel__ts_valid(&ts));
	assert_false(cancel__ts_valid(NULL));

	ts.tv_sec = 0;
	ts.tv_nsec = 0;
	assert_true(cancel__ts_valid(&ts));
	ts.tv_nsec = 999999999;
	assert_true(cancel__ts_valid(&ts));
	ts.tv_sec = TIME_T_MAX;
	assert_true(cancel__ts_valid(&ts));
}

static void
deadline_ns_maps_null_to_never_and_bad_to_einval(void **state)
{
	(void)state;
	uint64_t out = 7;
	assert_int_equal(cancel__deadline_ns(NULL, &out), 0);
	assert_true(out == CANCEL_NEVER);

	struct timespec bad[] = {{0, -1}, {0, 1000000000}, {-1, 0}, {-5, 5}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		out = 7;
		assert_int_equal(cancel__deadline_ns(&bad[i], &out), EINVAL);
		assert_true(out == 7);
	}
	struct timespec ok = {3, 4};
	assert_int_equal(cancel__deadline_ns(&ok, &out), 0);
	assert_true(out == 3 * NS + 4);
}

static void
ts_to_ns_saturates_for_huge_seconds(void **state)
{
	(void)state;
	struct timespec ts = {TIME_T_MAX, 999999999};
	assert_true(cancel__ts_to_ns(&ts) == CANCEL_NEVER);
	ts.tv_nsec = 0;
	assert_true(cancel__ts_to_ns(&ts) == CANCEL_NEVER);

	/* The boundary: 18446744073.709551615 s is UINT64_MAX ns. */
	ts.tv_sec = 18446744073;
	ts.tv_nsec = 709551614;
	assert_true(cancel__ts_to_ns(&ts) == CANCEL_NEVER - 1);
	ts.tv_nsec = 709551615;
	assert_true(cancel__ts_to_ns(&ts) == CANCEL_NEVER);
	ts.tv_nsec = 709551616;
	assert_true(cancel__ts_to_ns(&ts) == CANCEL_NEVER);
	ts.tv_sec = 18446744074;
	ts.tv_nsec = 0;
	assert_true(cancel__ts_to_ns(&ts) == CANCEL_NEVER);
}

static void
ns_to_ts_maps_never_to_largest_timespec(void **state)
{
	(void)state;
	struct timespec ts = cancel__ns_to_ts(CANCEL_NEVER);
	assert_true(ts.tv_sec == TIME_T_MAX);
	assert_int_equal(ts.tv_nsec, 999999999);
	assert_true(cancel__ts_valid(&ts));

	ts = cancel__ns_to_ts(CANCEL_NEVER - 1);
	assert_true(ts.tv_sec == (time_t)18446744073);
	assert_int_equal(ts.tv_nsec, 709551614);
}

static void
conversions_round_trip(void **state)
{
	(void)state;
	uint64_t vals[] = {0, 1, 999999999, 1000000000, 1000000001,
	                   123456789012345ull, CANCEL_NEVER - 1, CANCEL_NEVER,
	                   CANCEL_NEVER / 3};
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		struct timespec ts = cancel__ns_to_ts(vals[i]);
		assert_true(cancel__ts_valid(&ts));
		assert_true(cancel__ts_to_ns(&ts) == vals[i]);
	}
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 10000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		struct timespec ts = cancel__ns_to_ts(x);
		assert_true(cancel__ts_to_ns(&ts) == x);
		/* The split itself, computed independently (a conversion
		 * pair that were wrong the same way both directions would
		 * still round-trip). */
		if (x != CANCEL_NEVER) {
			assert_true((uint64_t)ts.tv_sec == x / 1000000000ull);
			assert_true(ts.tv_nsec == (long)(x % 1000000000ull));
		}
	}
}

static void
now_ns_reads_clock_monotonic(void **state)
{
	(void)state;
	uint64_t a = raw_now();
	uint64_t n = cancel__now_ns();
	uint64_t b = raw_now();
	assert_true(a <= n);
	assert_true(n <= b);
}

static void
deadline_in_is_monotonic_and_adds_duration(void **state)
{
	(void)state;
	uint64_t prev = 0;
	for (int i = 0; i < 1000; i++) {
		struct timespec ts = cancel_deadline_in(0);
		assert_true(cancel__ts_valid(&ts));
		uint64_t v = cancel__ts_to_ns(&ts);
		assert_true(v >= prev);
		prev = v;
	}
	uint64_t a = raw_now();
	struct timespec ts = cancel_deadline_in(5 * NS);
	uint64_t b = raw_now();
	uint64_t v = cancel__ts_to_ns(&ts);
	assert_true(v >= a + 5 * NS);
	assert_true(v <= b + 5 * NS);
}

static void
deadline_in_saturates_to_largest_timespec(void **state)
{
	(void)state;
	uint64_t durations[] = {CANCEL_NEVER, CANCEL_NEVER - 1,
	                        CANCEL_NEVER - 1000};
	for (size_t i = 0; i < 3; i++) {
		struct timespec ts = cancel_deadline_in(durations[i]);
		assert_true(ts.tv_sec == TIME_T_MAX);
		assert_int_equal(ts.tv_nsec, 999999999);
		assert_true(cancel__ts_to_ns(&ts) == CANCEL_NEVER);
	}
}

static void
deadline_in_leaves_errno_alone(void **state)
{
	(void)state;
	errno = 4242;
	(void)cancel_deadline_in(1000);
	(void)cancel_deadline_in(CANCEL_NEVER);
	assert_int_equal(errno, 4242);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(add_sat_saturates_at_never),
		cmocka_unit_test(ts_valid_rejects_bad_nsec_and_negative_sec),
		cmocka_unit_test(
			deadline_ns_maps_null_to_never_and_bad_to_einval),
		cmocka_unit_test(ts_to_ns_saturates_for_huge_seconds),
		cmocka_unit_test(ns_to_ts_maps_never_to_largest_timespec),
		cmocka_unit_test(conversions_round_trip),
		cmocka_unit_test(now_ns_reads_clock_monotonic),
		cmocka_unit_test(deadline_in_is_monotonic_and_adds_duration),
		cmocka_unit_test(deadline_in_saturates_to_largest_timespec),
		cmocka_unit_test(deadline_in_leaves_errno_alone),
	};
	return cmocka_run_group_tests_name("deadline", tests, NULL, NULL);
}
