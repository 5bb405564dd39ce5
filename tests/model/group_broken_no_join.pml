/* group_broken_no_join.pml: see group.pml. Must FAIL. */
#define BROKEN_NO_JOIN
#include "group.pml"
