/*
 * The cmocka stand-in for the musl build: see cmocka.h.
 */
#include "cmocka.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum outcome { PASSED, FAILED, SKIPPED };

static pthread_t runner;
static int in_test;     /* the runner is inside a test or fixture */
static jmp_buf back;    /* where the runner's failures jump to */
static int skipped;     /* set by skip() before the jump */

/* Leave the current test: jump back on the runner, abort elsewhere. */
static void
leave(int skip_it)
{
	if (in_test && pthread_equal(pthread_self(), runner)) {
		skipped = skip_it;
		longjmp(back, 1);
	}
	fprintf(stderr, "[  ERROR   ] --- failure outside the thread running "
	                "the tests: abort\n");
	fflush(NULL);
	abort();
}

static void
failed_at(const char *file, int line)
{
	fprintf(stderr, "[   LINE   ] --- %s:%d: error: Failure!\n", file,
	        line);
	leave(0);
}

void
_assert_true(LargestIntegralType value, const char *expr, const char *file,
             int line)
{
	if (value)
		return;
	fprintf(stderr, "[  ERROR   ] --- %s\n", expr);
	failed_at(file, line);
}

void
_assert_int_equal(LargestIntegralType a, LargestIntegralType b,
                  const char *file, int line)
{
	if (a == b)
		return;
	fprintf(stderr,
	        "[  ERROR   ] --- %" PRIdMAX " (%#" PRIxMAX ") != %" PRIdMAX
	        " (%#" PRIxMAX ")\n",
	        (intmax_t)a, a, (intmax_t)b, b);
	failed_at(file, line);
}

void
_assert_int_not_equal(LargestIntegralType a, LargestIntegralType b,
                      const char *file, int line)
{
	if (a != b)
		return;
	fprintf(stderr, "[  ERROR   ] --- %" PRIdMAX " == %" PRIdMAX "\n",
	        (intmax_t)a, (intmax_t)b);
	failed_at(file, line);
}

void
_assert_in_range(LargestIntegralType value, LargestIntegralType lo,
                 LargestIntegralType hi, const char *file, int line)
{
	if (value >= lo && value <= hi)
		return;
	fprintf(stderr,
	        "[  ERROR   ] --- %" PRIuMAX " is not within the range [%" PRIuMAX
	        ", %" PRIuMAX "]\n",
	        value, lo, hi);
	failed_at(file, line);
}

void
_assert_ptr_equal(const void *a, const void *b, const char *file, int line)
{
	if (a == b)
		return;
	fprintf(stderr, "[  ERROR   ] --- %p != %p\n", a, b);
	failed_at(file, line);
}

void
_assert_memory_equal(const void *a, const void *b, size_t size,
                     const char *file, int line)
{
	if (memcmp(a, b, size) == 0)
		return;
	fprintf(stderr, "[  ERROR   ] --- %zu bytes at %p and %p differ\n",
	        size, a, b);
	failed_at(file, line);
}

void
_assert_string_equal(const char *a, const char *b, const char *file,
                     int line)
{
	if (a != NULL && b != NULL && strcmp(a, b) == 0)
		return;
	fprintf(stderr, "[  ERROR   ] --- \"%s\" != \"%s\"\n",
	        a != NULL ? a : "(null)", b != NULL ? b : "(null)");
	failed_at(file, line);
}

void
_fail(const char *file, int line)
{
	failed_at(file, line);
}

void
_cm_fail_msg(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fputs("[  ERROR   ] --- ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failed_at(file, line);
}

void
_skip(const char *file, int line)
{
	fprintf(stderr, "[   LINE   ] --- %s:%d: Skipped!\n", file, line);
	leave(1);
}

void
print_message(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* Run a fixture (@fix) or a test (@test) with failures jumping back here. */
static enum outcome
run_guarded(CMFixtureFunction fix, CMUnitTestFunction test, void **state)
{
	fflush(NULL);
	skipped = 0;
	in_test = 1;
	if (setjmp(back) != 0) {
		in_test = 0;
		fflush(NULL);
		return skipped ? SKIPPED : FAILED;
	}
	enum outcome o = PASSED;
	if (fix != NULL && fix(state) != 0)
		o = FAILED;
	if (test != NULL)
		test(state);
	in_test = 0;
	fflush(NULL);
	return o;
}

int
_cmocka_run_group_tests(const char *group_name,
                        const struct CMUnitTest *tests, size_t count,
                        CMFixtureFunction group_setup,
                        CMFixtureFunction group_teardown)
{
	void *group_state = NULL;
	size_t passed = 0, failed = 0, skips = 0;
	const char **failed_names = calloc(count + 1, sizeof(*failed_names));

	runner = pthread_self();
	printf("[==========] %s: Running %zu test(s).\n", group_name, count);
	if (group_setup != NULL &&
	    run_guarded(group_setup, NULL, &group_state) != PASSED) {
		printf("[  ERROR   ] %s: group setup failed\n", group_name);
		printf("[  FAILED  ] %s: %zu test(s) not run.\n", group_name,
		       count);
		fflush(NULL);
		free(failed_names);
		return (int)count + 1;
	}
	for (size_t i = 0; i < count; i++) {
		const struct CMUnitTest *t = &tests[i];
		void *state = t->initial_state != NULL ? t->initial_state
		                                       : group_state;
		printf("[ RUN      ] %s\n", t->name);
		enum outcome o = PASSED;
		if (t->setup_func != NULL) {
			o = run_guarded(t->setup_func, NULL, &state);
			if (o == FAILED)
				fprintf(stderr, "[  ERROR   ] --- Test setup "
				                "failed\n");
		}
		/* As cmocka: the teardown runs when the setup succeeded,
		 * whatever the test did. */
		if (o == PASSED) {
			o = run_guarded(NULL, t->test_func, &state);
			if (t->teardown_func != NULL &&
			    run_guarded(t->teardown_func, NULL, &state) !=
			            PASSED) {
				fprintf(stderr, "[  ERROR   ] --- Test "
				                "teardown failed\n");
				o = FAILED;
			}
		}
		switch (o) {
		case PASSED:
			printf("[       OK ] %s\n", t->name);
			passed++;
			break;
		case SKIPPED:
			printf("[  SKIPPED ] %s\n", t->name);
			skips++;
			break;
		case FAILED:
			printf("[  FAILED  ] %s\n", t->name);
			if (failed_names != NULL)
				failed_names[failed] = t->name;
			failed++;
			break;
		}
		fflush(NULL);
	}
	if (group_teardown != NULL &&
	    run_guarded(group_teardown, NULL, &group_state) != PASSED) {
		printf("[  ERROR   ] %s: group teardown failed\n", group_name);
		failed++;
	}
	printf("[==========] %s: %zu test(s) run.\n", group_name, count);
	printf("[  PASSED  ] %zu test(s).\n", passed);
	if (skips != 0)
		printf("[  SKIPPED ] %zu test(s).\n", skips);
	if (failed != 0) {
		printf("[  FAILED  ] %zu test(s), listed below:\n", failed);
		for (size_t i = 0; failed_names != NULL && i < failed; i++)
			if (failed_names[i] != NULL)
				printf("[  FAILED  ] %s\n", failed_names[i]);
		printf("\n %zu FAILED TEST(S)\n", failed);
	}
	fflush(NULL);
	free(failed_names);
	return (int)failed;
}
