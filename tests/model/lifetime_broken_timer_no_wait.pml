/* lifetime_broken_timer_no_wait.pml: see README.md. Must FAIL. */
#define BROKEN_TIMER_NO_WAIT
#define TIMER
#define UNREG
#include "lifetime.pml"
