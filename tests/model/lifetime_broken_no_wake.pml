/* lifetime_broken_no_wake.pml: see README.md. Must FAIL. */
#define BROKEN_NO_WAKE
#define IO
#include "lifetime.pml"
