/* queue_broken_no_recheck.pml: see queue.pml. Must FAIL. */
#define BROKEN_NO_RECHECK
#include "queue.pml"
