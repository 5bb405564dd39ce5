/* timer_rearm_broken_no_recheck.pml: see timer_rearm.pml. Must FAIL. */
#define BROKEN_NO_RECHECK
#include "timer_rearm.pml"
