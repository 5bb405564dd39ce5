/* condwait_broken_bare_broadcast.pml: see README.md. Must FAIL. */
#define BROKEN_BARE_BROADCAST
#include "condwait.pml"
