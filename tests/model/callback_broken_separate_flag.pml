/* callback_broken_separate_flag.pml: see README.md. Must FAIL. */
#define SCEN 1
#define BROKEN_SEPARATE_FLAG
#include "callback.pml"
