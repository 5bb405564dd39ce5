/* callback_broken_destroy_touch.pml: see README.md. Must FAIL. */
#define SCEN 3
#define BROKEN_DESTROY_TOUCH
#include "callback.pml"
