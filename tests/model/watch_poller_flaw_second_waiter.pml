/* watch_poller_flaw_second_waiter.pml: see watch_poller.pml. FAILS: documents a flaw. */
#define TWO
#include "watch_poller.pml"
