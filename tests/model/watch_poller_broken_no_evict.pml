/* watch_poller_broken_no_evict.pml: see watch_poller.pml. Must FAIL. */
#define BROKEN_NO_EVICT
#include "watch_poller.pml"
