/* link_broken_no_wait.pml: see README.md. Must FAIL (with QUEUED). */
#define BROKEN_NO_WAIT
#include "link.pml"
