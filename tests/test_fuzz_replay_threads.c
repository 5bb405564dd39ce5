/*
 * Replays the fuzz_threads corpus (fuzz/corpus_threads) and seeded random
 * inputs through the two-thread fuzz target, built with this build's
 * compiler and sanitizers (under the tsan preset: ThreadSanitizer). The
 * target checks the contract's oracles and aborts when one fails.
 * CANCEL_FUZZ_RANDOM sets the number of random inputs (default 1000),
 * CANCEL_TEST_SEED their seed.
 */
/* ctest: TIMEOUT 300 LABELS fuzz SOURCES ../fuzz/fuzz_threads.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../fuzz/replay.h"
#include "testutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
threads_corpus_and_random_inputs_keep_the_oracles(void **state)
{
	(void)state;
	unsigned seed = tu_seed("fuzz_replay_threads");
	long files = replay_run("fuzz_replay_threads", __FILE__,
	                        "corpus_threads", LLVMFuzzerTestOneInput,
	                        tu_rounds(1000, 10000), seed, 128);
	assert_true(files > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		    threads_corpus_and_random_inputs_keep_the_oracles),
	};
	return cmocka_run_group_tests_name("fuzz_replay_threads", tests, NULL,
	                                   NULL);
}
