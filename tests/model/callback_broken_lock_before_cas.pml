/* callback_broken_lock_before_cas.pml: see README.md. Must FAIL. */
#define SCEN 1
#define ONE_CANCEL
#define BROKEN_LOCK_BEFORE_CAS
#include "callback.pml"
