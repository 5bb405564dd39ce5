/* callback_release_flaw_aba.pml: see README.md. A flaw: FAILS. */
#define FREE
#define ABA
#include "callback_release.pml"
