/* waiter_broken_count_before.pml: see README.md. Must FAIL. */
#define BROKEN_COUNT_BEFORE
#include "waiter.pml"
