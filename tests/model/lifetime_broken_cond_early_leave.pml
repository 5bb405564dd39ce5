/* lifetime_broken_cond_early_leave.pml: see README.md. Must FAIL. */
#define BROKEN_COND_EARLY_LEAVE
#define COND
#include "lifetime.pml"
