/* link_broken_no_dequeue.pml: see README.md. Must FAIL. */
#define SELF
#define QUEUED
#define BROKEN_NO_DEQUEUE
#include "link.pml"
