/* signal_broken_racy_push.pml: see README.md. Must FAIL. */
#define TWO
#define BROKEN_RACY_PUSH
#include "signal.pml"
