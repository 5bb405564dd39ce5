/* callback_release_broken_clear_first.pml: see README.md. Must FAIL. */
#define BROKEN_CLEAR_FIRST
#include "callback_release.pml"
