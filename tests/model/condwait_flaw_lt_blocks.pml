/* condwait_flaw_lt_blocks.pml: see README.md. FAILS: documents a flaw. */
#define TIMER
#include "condwait.pml"
