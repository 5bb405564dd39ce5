/* condwait_broken_no_passon.pml: see README.md. Must FAIL. */
#define PRODUCER
#define BROKEN_NO_PASSON
#include "condwait.pml"
