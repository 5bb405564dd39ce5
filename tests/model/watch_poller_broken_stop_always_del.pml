/* watch_poller_broken_stop_always_del.pml: see watch_poller.pml. Must FAIL. */
#define SECOND
#define BROKEN_STOP_ALWAYS_DEL
#include "watch_poller.pml"
