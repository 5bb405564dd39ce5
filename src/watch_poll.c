/*
 * The portable watch backend: the loop polls every watched descriptor
 * itself, next to its wake descriptor. Events: POLLRDHUP where the system
 * defines it (Linux) unless the watch ignores half-closes, else none
 * (POLLHUP and POLLERR are always reported). Never POLLIN.
 *
 * A registry (a growable array, so this backend may return ENOMEM) holds
 * the active watches; a watch knows its slot (slot_) and is removed by
 * swapping the last entry in. The loop thread owns a snapshot of it, the
 * poll set, rebuilt when the registry changed (`dirty`); only the loop
 * thread ever touches that set, since ppoll writes revents into it after
 * sleeping. Each set slot remembers the watch, its registry slot and its
 * stamp; under the lock, a reported slot counts only if the registry slot
 * still holds that watch with that stamp (a stopped, freed or re-watched
 * struct is never followed). A miss costs nothing: the condition is
 * level-triggered and the next, rebuilt set reports it again.
 *
 * A new watch kicks the loop (one write) so that its set includes it; so
 * does a stop: a thread asleep in ppoll() holds a reference to every file
 * it polls until it wakes, so without the kick a socket the caller closes
 * right after the stop would stay open (no FIN to the peer) until the
 * loop's next wake-up, which may be never.
 */
#include "watch.h"
#include "atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#ifndef POLLRDHUP
#define POLLRDHUP 0
#endif

struct reg {
	struct cancel_watch *w;
	uint32_t stamp;
	int fd;
	short events;
	bool dead; /* reported POLLNVAL: closed before its stop; not polled */
};

struct snap {
	struct cancel_watch *w;
	uint32_t stamp;
	size_t slot;
};

/* Under the lock. */
static struct reg *regs;
static size_t nregs;
static size_t capregs;
static bool dirty = true;

/* The loop thread's. */
static struct pollfd *set;
static struct snap *snaps;
static size_t capset;

/* Append @w to the registry. 0 or ENOMEM. */
static int
reg_add(struct cancel_watch *w)
{
	if (nregs == capregs) {
		size_t cap = capregs ? capregs * 2 : 64;
		struct reg *r = realloc(regs, cap * sizeof *r);
		if (r == NULL)
			return ENOMEM;
		regs = r;
		capregs = cap;
	}
	short ev = (w->flags_ & CANCEL_WATCH_IGNORE_HALF_CLOSE) ? 0
	                                                        : POLLRDHUP;
	regs[nregs] = (struct reg){w, w->stamp_, w->fd_, ev, false};
	w->slot_ = (uint32_t)nregs;
	nregs++;
	dirty = true;
	return 0;
}

int
cancel__wb_add(struct cancel_watch *w, bool *kick)
{
	if (fcntl(w->fd_, F_GETFD) < 0)
		return EINVAL;
	int rc = reg_add(w);
	if (rc == 0)
		*kick = true;
	return rc;
}

int
cancel__wb_resume(struct cancel_watch *w, bool *kick)
{
	/* The same stamp: a set slot of the loop's taken before the
	 * suspend names the same descriptor, still open (see the top). */
	int rc = reg_add(w);
	if (rc == 0)
		*kick = true;
	return rc;
}

static void
reg_remove(size_t k)
{
	regs[k] = regs[--nregs];
	if (k < nregs)
		regs[k].w->slot_ = (uint32_t)k;
	dirty = true;
}

void
cancel__wb_del(struct cancel_watch *w)
{
	size_t k = w->slot_;
	/* Already gone when it was reported (PENDING, FIRED). */
	if (k < nregs && regs[k].w == w && regs[k].stamp == w->stamp_) {
		reg_remove(k);
		cancel__lt_kick(); /* let go of the file (see the top) */
	}
}

int
cancel__wb_suspend(struct cancel_watch *w)
{
	/* An ACTIVE watch is in the registry (a reported one is PENDING).
	 * The kick makes the loop drop the descriptor from its set, so the
	 * hang-up wakes only the waiter. */
	cancel__wb_del(w);
	return 0;
}

struct pollfd *
cancel__wb_pollset(int kickfd, nfds_t *n)
{
	static nfds_t nset = 1;

	pthread_mutex_lock(&cancel__watch_mu);
	if (dirty || capset == 0) {
		size_t need = nregs + 1;
		if (need > capset) {
			/* Both grow together; on failure keep the old
			 * arrays, poll what fits, and retry next time. */
			struct pollfd *s = realloc(set, need * sizeof *s);
			if (s != NULL)
				set = s;
			struct snap *p = realloc(snaps, need * sizeof *p);
			if (p != NULL)
				snaps = p;
			if (s != NULL && p != NULL)
				capset = need;
		}
		if (capset == 0) {
			static struct pollfd one;
			pthread_mutex_unlock(&cancel__watch_mu);
			one = (struct pollfd){.fd = kickfd, .events = POLLIN};
			*n = 1;
			return &one;
		}
		nset = 1;
		for (size_t k = 0; k < nregs && nset < capset; k++) {
			if (regs[k].dead)
				continue;
			set[nset] = (struct pollfd){.fd = regs[k].fd,
			                            .events = regs[k].events};
			snaps[nset] = (struct snap){regs[k].w, regs[k].stamp,
			                            k};
			nset++;
		}
		dirty = nregs + 1 > capset;
	}
	pthread_mutex_unlock(&cancel__watch_mu);
	set[0] = (struct pollfd){.fd = kickfd, .events = POLLIN};
	for (nfds_t i = 1; i < nset; i++)
		set[i].revents = 0;
	*n = nset;
	return set;
}

void
cancel__wb_collect(struct pollfd *s, nfds_t n)
{
	for (nfds_t i = 1; i < n; i++) {
		if (s[i].revents == 0)
			continue;
		struct snap *p = &snaps[i];
		/* Compared before anything is followed: see above. */
		if (p->slot >= nregs || regs[p->slot].w != p->w ||
		    regs[p->slot].stamp != p->stamp)
			continue;
		if (s[i].revents & POLLNVAL) {
			regs[p->slot].dead = true;
			dirty = true;
			continue;
		}
		reg_remove(p->slot);
		cancel__watch_pend(p->w);
	}
}

void
cancel__wb_atfork_child(void)
{
	/* The parent's watches are not ours; the arrays are (copies). */
	nregs = 0;
	dirty = true;
}
