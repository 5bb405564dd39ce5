/* watch_poller_broken_run_callbacks.pml: see watch_poller.pml. Must FAIL. */
#define REGISTRAR
#define BROKEN_RUN_CALLBACKS
#include "watch_poller.pml"
