/* timer_broken_no_wait.pml: see README.md. Must FAIL. */
#define BROKEN_NO_WAIT
#include "timer.pml"
