/* timer_broken_wait_self.pml: see README.md. Must FAIL. */
#define SELF
#define BROKEN_WAIT_SELF
#include "timer.pml"
