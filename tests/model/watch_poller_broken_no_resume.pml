/* watch_poller_broken_no_resume.pml: see watch_poller.pml. Must FAIL. */
#define SETTLE
#define DEADLINE
#define BROKEN_NO_RESUME
#include "watch_poller.pml"
