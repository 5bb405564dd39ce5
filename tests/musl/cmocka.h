/*
 * A cmocka stand-in for the musl build (tests/analysis/run_musl.sh) only:
 * Debian has no cmocka built against musl. It implements the part of the
 * cmocka API the tests use, with cmocka's behaviour: each test runs after
 * its setup and before its teardown; a failed assertion, fail() or skip()
 * on the thread running the tests jumps back to the runner (setjmp/
 * longjmp); a failed assertion on any other thread prints the failure and
 * aborts the program. The runner prints cmocka-like "[ RUN      ]",
 * "[       OK ]", "[  PASSED  ] N test(s)." lines and returns the number
 * of failed tests. A test using more of cmocka does not compile here:
 * add the call below.
 */
#ifndef CANCEL_MUSL_CMOCKA_H
#define CANCEL_MUSL_CMOCKA_H

#include <stddef.h>
#include <stdint.h>

typedef uintmax_t LargestIntegralType;
typedef void (*CMUnitTestFunction)(void **state);
typedef int (*CMFixtureFunction)(void **state);

struct CMUnitTest {
	const char *name;
	CMUnitTestFunction test_func;
	CMFixtureFunction setup_func;
	CMFixtureFunction teardown_func;
	void *initial_state;
};

#define cmocka_unit_test(f) { #f, f, NULL, NULL, NULL }
#define cmocka_unit_test_setup_teardown(f, setup, teardown)                  \
	{ #f, f, setup, teardown, NULL }

#define cmocka_unit_test_prestate_setup_teardown(f, setup, teardown, st) \
	{ #f, f, setup, teardown, st }

#define cmocka_run_group_tests(tests, group_setup, group_teardown)          \
	cmocka_run_group_tests_name(#tests, tests, group_setup, group_teardown)

#define cmocka_run_group_tests_name(name, tests, group_setup, group_teardown) \
	_cmocka_run_group_tests(name, tests, sizeof(tests) / sizeof((tests)[0]), \
	                        group_setup, group_teardown)

int _cmocka_run_group_tests(const char *group_name,
                            const struct CMUnitTest *tests, size_t count,
                            CMFixtureFunction group_setup,
                            CMFixtureFunction group_teardown);

void _assert_true(LargestIntegralType value, const char *expr,
                  const char *file, int line);
void _assert_int_equal(LargestIntegralType a, LargestIntegralType b,
                       const char *file, int line);
void _assert_int_not_equal(LargestIntegralType a, LargestIntegralType b,
                           const char *file, int line);
void _assert_in_range(LargestIntegralType value, LargestIntegralType lo,
                      LargestIntegralType hi, const char *file, int line);
void _assert_ptr_equal(const void *a, const void *b, const char *file,
                       int line);
void _assert_memory_equal(const void *a, const void *b, size_t size,
                          const char *file, int line);
void _assert_string_equal(const char *a, const char *b, const char *file,
                          int line);
void _fail(const char *file, int line);
void _skip(const char *file, int line);
void _cm_fail_msg(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void print_message(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

#define assert_true(c)                                                       \
	_assert_true((LargestIntegralType)!!(c), #c, __FILE__, __LINE__)
#define assert_false(c)                                                      \
	_assert_true((LargestIntegralType)!(c), "!(" #c ")", __FILE__, __LINE__)
#define assert_non_null(c)                                                   \
	_assert_true((LargestIntegralType)((c) != NULL), #c, __FILE__,       \
	             __LINE__)
#define assert_null(c)                                                       \
	_assert_true((LargestIntegralType)((c) == NULL), "!(" #c ")",        \
	             __FILE__, __LINE__)
#define assert_int_equal(a, b)                                               \
	_assert_int_equal((LargestIntegralType)(a), (LargestIntegralType)(b), \
	                  __FILE__, __LINE__)
#define assert_int_not_equal(a, b)                                           \
	_assert_int_not_equal((LargestIntegralType)(a),                      \
	                      (LargestIntegralType)(b), __FILE__, __LINE__)
#define assert_in_range(v, lo, hi)                                           \
	_assert_in_range((LargestIntegralType)(v), (LargestIntegralType)(lo), \
	                 (LargestIntegralType)(hi), __FILE__, __LINE__)
#define assert_ptr_equal(a, b)                                               \
	_assert_ptr_equal((const void *)(a), (const void *)(b), __FILE__,    \
	                  __LINE__)
#define assert_memory_equal(a, b, size)                                      \
	_assert_memory_equal((a), (b), (size), __FILE__, __LINE__)
#define assert_string_equal(a, b)                                            \
	_assert_string_equal((a), (b), __FILE__, __LINE__)
#define fail() _fail(__FILE__, __LINE__)
#define fail_msg(...) _cm_fail_msg(__FILE__, __LINE__, __VA_ARGS__)
#define skip() _skip(__FILE__, __LINE__)

#endif /* CANCEL_MUSL_CMOCKA_H */
