/* callback_broken_swap.pml: see README.md. Must FAIL. */
#define SCEN 1
#define BROKEN_SWAP
#include "callback.pml"
