/* timer_broken_bcast_unlocked.pml: see README.md. Must FAIL. */
#define BROKEN_BCAST_UNLOCKED
#include "timer.pml"
