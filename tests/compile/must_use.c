/*
 * Compiled, never run, by the must_use_* tests: ignoring the result of
 * cancel_source_destroy() must not compile with -Werror (must_use_warns,
 * WILL_FAIL), and the same file using the result must (must_use_control,
 * so that the first test cannot pass for an unrelated reason).
 */
#include <cancel.h>

int
main(void)
{
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
#ifdef USE_RESULT
	return cancel_source_destroy(&s);
#else
	cancel_source_destroy(&s);
	return 0;
#endif
}
