/* group_broken_word_first.pml: see group.pml. Must FAIL. */
#define BROKEN_WORD_FIRST
#include "group.pml"
