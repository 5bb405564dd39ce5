/* callback_broken_released_skip.pml: see README.md. Must FAIL. */
#define SCEN 2
#define BROKEN_RELEASED_SKIP
#include "callback.pml"
