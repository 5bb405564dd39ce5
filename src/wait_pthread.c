/*
 * Portable backend of wait.h: a parking lot. A fixed table of buckets,
 * each a mutex and a CLOCK_MONOTONIC condition variable, hashed by the
 * address of the word. Parking checks the word under the bucket lock;
 * unparking broadcasts under the same lock and never reads the word.
 *
 * No lost wake-up: a parker loads the word while holding the bucket lock
 * and releases that lock only atomically with joining the condvar. The
 * waker changes the word first, then takes the lock. If the parker's load
 * saw the old value, the waker's lock came after the parker's load, hence
 * after the parker joined the condvar, and the broadcast wakes it; if the
 * waker's lock came first, the change happens-before the parker's load,
 * which then sees the new value and does not sleep.
 */
#include "internal.h"
#include "atomic.h"

#include <errno.h>
#include <pthread.h>

const bool cancel__unpark_signal_safe = false;
const char cancel__backend_name[] = "pthread";

#define NBUCKETS 64 /* a power of two */

struct bucket {
	pthread_mutex_t mu;
	pthread_cond_t cv;
} __attribute__((aligned(64)));

static struct bucket table[NBUCKETS];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void
init_bucket(struct bucket *b)
{
	pthread_condattr_t attr;
	pthread_mutex_init(&b->mu, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cv, &attr);
	pthread_condattr_destroy(&attr);
}

/*
 * fork(): a bucket lock held by a thread that does not exist in the child
 * would deadlock it, and condvar waiters of the parent are gone: start
 * the child with fresh buckets.
 */
static void
atfork_child(void)
{
	for (int i = 0; i < NBUCKETS; i++)
		init_bucket(&table[i]);
}

static void
init_table(void)
{
	for (int i = 0; i < NBUCKETS; i++)
		init_bucket(&table[i]);
	pthread_atfork(NULL, NULL, atfork_child);
}

static struct bucket *
bucket_of(const uint32_t *word)
{
	pthread_once(&table_once, init_table);
	uint64_t h = (uint64_t)(uintptr_t)word >> 2;
	h *= 0x9e3779b97f4a7c15ull;
	return &table[h >> (64 - 6)];
}

int
cancel__park(uint32_t *word, uint32_t expected, uint64_t deadline_ns)
{
	int saved = errno;
	struct bucket *b = bucket_of(word);
	int rc = 0;
	/* cond_wait is a cancellation point: a thread canceled in it would
	 * exit holding the bucket lock. */
	int cstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cstate);
	pthread_mutex_lock(&b->mu);
	/* Acquire: the caller reloads with acquire anyway; this one only
	 * decides whether to sleep (see the comment at the top). */
	if (ld_acquire(word) == expected) {
		if (deadline_ns == CANCEL_NEVER) {
			pthread_cond_wait(&b->cv, &b->mu);
		} else {
			struct timespec ts = cancel__ns_to_ts(deadline_ns);
			if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) ==
			    ETIMEDOUT)
				rc = ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&b->mu);
	pthread_setcancelstate(cstate, NULL);
	errno = saved;
	return rc;
}

void
cancel__unpark_all(uint32_t *word)
{
	int saved = errno;
	struct bucket *b = bucket_of(word);
	/* Taking the lock orders this wake after any parker's check of the
	 * word; @word itself is never read (it may be freed memory). */
	pthread_mutex_lock(&b->mu);
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	errno = saved;
}
