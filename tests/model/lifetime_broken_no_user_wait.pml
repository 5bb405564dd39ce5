/* lifetime_broken_no_user_wait.pml: see README.md. Must FAIL. */
#define BROKEN_NO_USER_WAIT
#define IO
#include "lifetime.pml"
