/* lifetime_flaw_unreg_early.pml: see README.md. FAILS: documents a flaw. */
#define UNREG_EARLY
#define UNREG
#include "lifetime.pml"
