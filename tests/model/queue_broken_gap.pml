/* queue_broken_gap.pml: see queue.pml. Must FAIL. */
#define BROKEN_GAP
#include "queue.pml"
