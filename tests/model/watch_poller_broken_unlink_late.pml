/* watch_poller_broken_unlink_late.pml: see watch_poller.pml. Must FAIL. */
#define TWO
#define BROKEN_UNLINK_LATE
#include "watch_poller.pml"
