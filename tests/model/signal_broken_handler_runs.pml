/* signal_broken_handler_runs.pml: see README.md. Must FAIL. */
#define BROKEN_HANDLER_RUNS
#include "signal.pml"
