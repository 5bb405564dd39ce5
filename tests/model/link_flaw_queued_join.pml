/* link_flaw_queued_join.pml: see README.md. Expected to FAIL. */
#define JOIN
#define QUEUED
#include "link.pml"
