/* signal_broken_no_lt_wake.pml: see README.md. Must FAIL. */
#define PTHREAD
#define BROKEN_NO_LT_WAKE
#include "signal.pml"
