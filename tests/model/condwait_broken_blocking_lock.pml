/* condwait_broken_blocking_lock.pml: see README.md. Must FAIL. */
#define BROKEN_BLOCKING_LOCK
#include "condwait.pml"
