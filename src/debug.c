/*
 * CANCEL_DEBUG=leaks: a registry of live sources and a report at exit.
 *
 * The environment is read once, by a constructor, into cancel__debug_leaks.
 * Off (the default) nothing here runs: init and destroy test the flag and
 * branch past a tail call. On, init records the source with the code
 * address that called init (or init_linked), destroy forgets it, and an
 * atexit handler prints what is left: each source's creator, its armed
 * deadline and its registered callbacks' functions.
 *
 * The source has no spare field for an intrusive list, so the registry is
 * an open-addressing hash set keyed by the source's address, allocated by
 * this file only in debug mode and guarded by one mutex (reset around
 * fork). If it cannot grow, tracking stops and the report says so.
 */
#include "internal.h"

#include "atomic.h"
#include "core.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool cancel__debug_leaks;

struct entry {
	struct cancel_source *src; /* NULL: free; TOMB: removed */
	void *where;
};

#define TOMB ((struct cancel_source *)(uintptr_t)1)

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry *table;
static size_t cap;    /* power of two, or 0 */
static size_t used;   /* live entries */
static size_t tombs;  /* removed entries still occupying slots */
static bool overflow; /* an allocation failed: the report is partial */

static size_t
slot_of(const struct cancel_source *src)
{
	uintptr_t h = (uintptr_t)src;
	h ^= h >> 17;
	h *= (uintptr_t)0x9e3779b97f4a7c15ull;
	h ^= h >> 29;
	return (size_t)h & (cap - 1);
}

/* Under reg_mu: the slot holding @src, or NULL. */
static struct entry *
find(const struct cancel_source *src)
{
	if (cap == 0)
		return NULL;
	for (size_t i = slot_of(src);; i = (i + 1) & (cap - 1)) {
		if (table[i].src == src)
			return &table[i];
		if (table[i].src == NULL)
			return NULL;
	}
}

/* Under reg_mu: insert (no duplicate check, a free slot must exist). */
static void
put(struct cancel_source *src, void *where)
{
	size_t i = slot_of(src);
	while (table[i].src != NULL && table[i].src != TOMB)
		i = (i + 1) & (cap - 1);
	if (table[i].src == TOMB)
		tombs--;
	table[i].src = src;
	table[i].where = where;
	used++;
}

/* Under reg_mu: make room for one more entry. False on ENOMEM. */
static bool
reserve(void)
{
	if ((used + tombs + 1) * 2 <= cap)
		return true;
	/* Rehash (dropping tombstones) at a size a quarter full or less. */
	size_t ncap = cap == 0 ? 64 : cap;
	while ((used + 1) * 4 > ncap)
		ncap *= 2;
	struct entry *old = table;
	size_t ocap = cap;
	struct entry *t = cancel__malloc(ncap * sizeof(*t));
	if (t == NULL)
		return false;
	memset(t, 0, ncap * sizeof(*t));
	table = t;
	cap = ncap;
	used = 0;
	tombs = 0;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].src != NULL && old[i].src != TOMB)
			put(old[i].src, old[i].where);
	cancel__free(old);
	return true;
}

int
cancel__debug_created(struct cancel_source *src, void *where, int rc)
{
	pthread_mutex_lock(&reg_mu);
	struct entry *e = find(src);
	if (e != NULL) {
		/* Initialized again without a destroy: the latest wins. */
		e->where = where;
	} else if (reserve()) {
		put(src, where);
	} else {
		overflow = true;
	}
	pthread_mutex_unlock(&reg_mu);
	return rc;
}

int
cancel__debug_destroyed(struct cancel_source *src)
{
	pthread_mutex_lock(&reg_mu);
	struct entry *e = find(src);
	if (e != NULL) {
		e->src = TOMB;
		used--;
		tombs++;
	}
	pthread_mutex_unlock(&reg_mu);
	return 0;
}

/* One leaked source: creator, state, deadline, callbacks. */
static void
report_one(FILE *out, struct cancel_source *src, void *where, uint64_t now)
{
	uint64_t s = ld_acquire(&src->state_);
	fprintf(out, "libcancel: leak: source %p created at %p%s", (void *)src,
	        where, (s & CANCEL__S_CANCELED) ? ", canceled" : "");
	uint64_t dl = cancel__timer_deadline(src);
	if (dl != CANCEL_NEVER) {
		double ms = dl > now ? (double)(dl - now) / 1e6
		                     : -(double)(now - dl) / 1e6;
		fprintf(out, ", deadline armed (due in %.1f ms)", ms);
	}
	/* Other threads may still run at exit: take the list lock only if
	 * it comes free soon; a list held forever is not walked. */
	unsigned spins = 0;
	while (!core_trylock(src)) {
		if (spins > 1000) {
			fprintf(out, ", callback list busy\n");
			return;
		}
		cancel__backoff(&spins);
	}
	size_t n = 0;
	for (struct cancel_callback *cb = src->head_; cb != NULL;
	     cb = cb->next_)
		if (!(ld_relaxed(&cb->state_) & CB_KEEP_SRC))
			n++;
	fprintf(out, ", %zu callback%s registered\n", n, n == 1 ? "" : "s");
	for (struct cancel_callback *cb = src->head_; cb != NULL;
	     cb = cb->next_) {
		if (ld_relaxed(&cb->state_) & CB_KEEP_SRC)
			continue; /* a child's link: the child is listed */
		/* A function pointer printed as an address: cast through
		 * uintptr_t, which ISO C allows on this platform. */
		fprintf(out, "libcancel: leak:   callback %p fn %p arg %p\n",
		        (void *)cb, (void *)(uintptr_t)cb->fn_, cb->arg_);
	}
	core_unlock(src);
}

static void
report_at_exit(void)
{
	pthread_mutex_lock(&reg_mu);
	if (used == 0 && !overflow) {
		pthread_mutex_unlock(&reg_mu);
		return;
	}
	FILE *out = stderr;
	uint64_t now = cancel__now_ns();
	fprintf(out,
	        "libcancel: CANCEL_DEBUG=leaks: %zu source%s not destroyed%s\n",
	        used, used == 1 ? "" : "s",
	        overflow ? " (registry out of memory: list incomplete)" : "");
	for (size_t i = 0; i < cap; i++)
		if (table[i].src != NULL && table[i].src != TOMB)
			report_one(out, table[i].src, table[i].where, now);
	fflush(out);
	pthread_mutex_unlock(&reg_mu);
}

static void
atfork_prepare(void)
{
	pthread_mutex_lock(&reg_mu);
}

static void
atfork_release(void)
{
	pthread_mutex_unlock(&reg_mu);
}

/* True if the comma-separated list @v names @word. */
static bool
has_word(const char *v, const char *word)
{
	size_t n = strlen(word);
	while (*v != '\0') {
		size_t k = strcspn(v, ",");
		if (k == n && strncmp(v, word, n) == 0)
			return true;
		v += k;
		if (*v == ',')
			v++;
	}
	return false;
}

__attribute__((constructor)) static void
debug_init(void)
{
	const char *v = getenv("CANCEL_DEBUG");
	if (v == NULL || !has_word(v, "leaks"))
		return;
	if (atexit(report_at_exit) != 0)
		return;
	pthread_atfork(atfork_prepare, atfork_release, atfork_release);
	cancel__debug_leaks = true;
}
