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
	char dir[4096];
	replay_corpus_dir(dir, sizeof(dir), __FILE__, "corpus_api");
	long files = replay_dir(dir, LLVMFuzzerTestOneInput);
	long nrand = tu_rounds(2000, 20000);
	const char *e = getenv("CANCEL_FUZZ_RANDOM");
	if (e != NULL && *e != '\0')
		nrand = strtol(e, NULL, 0);
	unsigned seed = tu_seed("fuzz_replay_api");
	long randoms = replay_random(LLVMFuzzerTestOneInput, seed, nrand, 256);
	fprintf(stderr, "fuzz_replay_api: %ld corpus files from %s, %ld "
	                "random inputs\n",
	        files, dir, randoms);
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
