/*
 * The one allocation hook and the live-object count. Every heap block and
 * descriptor the library holds is counted, so tests can check that a run
 * ends with nothing held, and fail any single allocation on purpose.
 */
#include "internal.h"

#include "atomic.h"

#include <errno.h>
#include <stdlib.h>

static long live_objects;
static long alloc_count;
static long fail_countdown; /* k > 0: the k-th allocation from now fails;
                            * k < 0: every allocation fails */
static int fail_errno;      /* errno an injected failure sets (0: none) */

static bool
should_fail(void)
{
	long k = ld_relaxed(&fail_countdown);
	if (k < 0)
		return true;
	while (k > 0) {
		if (cas_acq_rel(&fail_countdown, &k, k - 1))
			return k == 1;
	}
	return false;
}

void *
cancel__malloc(size_t n)
{
	if (should_fail()) {
		int e = ld_relaxed(&fail_errno);
		if (e != 0)
			errno = e; /* as a real malloc failure does */
		return NULL;
	}
	void *p = malloc(n);
	if (p != NULL) {
		fetch_add_relaxed(&live_objects, 1);
		fetch_add_relaxed(&alloc_count, 1);
	}
	return p;
}

void
cancel__free(void *p)
{
	if (p == NULL)
		return;
	fetch_add_relaxed(&live_objects, -1);
	free(p);
}

void
cancel__live_fd(int delta)
{
	fetch_add_relaxed(&live_objects, delta);
}

void
cancel__test_fail_alloc(long k)
{
	st_relaxed(&fail_countdown, k);
}

void
cancel__test_fail_alloc_errno(int e)
{
	st_relaxed(&fail_errno, e);
}

long
cancel__test_live_objects(void)
{
	return ld_relaxed(&live_objects);
}

long
cancel__test_alloc_count(void)
{
	return ld_relaxed(&alloc_count);
}
