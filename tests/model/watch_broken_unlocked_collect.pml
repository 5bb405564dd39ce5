/* watch_broken_unlocked_collect.pml: see watch.pml. Must FAIL. */
#define BROKEN_UNLOCKED_COLLECT
#include "watch.pml"
