/* lifetime_broken_wait_flag.pml: see README.md. Must FAIL. */
#define BROKEN_WAIT_FLAG
#define UNREG
#include "lifetime.pml"
