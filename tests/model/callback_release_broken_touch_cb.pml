/* callback_release_broken_touch_cb.pml: see README.md. Must FAIL. */
#define FREE
#define BROKEN_TOUCH_CB
#include "callback_release.pml"
