/*
 * Replays the fuzz_api corpus (fuzz/corpus_api) and seeded random inputs
 * through the fuzz target, built with this build's compiler and
 * sanitizers. The target checks the library against its reference model
 * and aborts on any disagreement. CANCEL_FUZZ_RANDOM sets the number of
 * random inputs (default 2000), CANCEL_TEST_SEED their seed.
 */
/* ctest: TIMEOUT 300 LABELS fuzz SOURCES ../fuzz/fuzz_api.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../fuzz/replay.h"
#include "testutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
api_corpus_and_random_inputs_agree_with_the_model(void **state)
{
	(void)state;
	unsigned seed = tu_seed("fuzz_replay_api");
	long files = replay_run("fuzz_replay_api", __FILE__, "corpus_api",
	                        LLVMFuzzerTestOneInput,
	                        tu_rounds(2000, 20000), seed, 256);
	assert_true(files > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		    api_corpus_and_random_inputs_agree_with_the_model),
	};
	return cmocka_run_group_tests_name("fuzz_replay_api", tests, NULL,
	                                   NULL);
}
