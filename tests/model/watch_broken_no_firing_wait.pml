/* watch_broken_no_firing_wait.pml: see watch.pml. Must FAIL. */
#define BROKEN_NO_FIRING_WAIT
#include "watch.pml"
