/* watch_poller_broken_no_recheck.pml: see watch_poller.pml. Must FAIL. */
#define BROKEN_NO_RECHECK
#include "watch_poller.pml"
