/* lifetime_broken_io_poll_only.pml: see README.md. Must FAIL. */
#define BROKEN_IO_POLL_ONLY
#define IO
#include "lifetime.pml"
